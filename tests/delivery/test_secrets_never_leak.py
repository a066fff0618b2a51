"""Storage keys, tokens and service-account JSON never reach logs, errors or results, whatever happens."""

from __future__ import annotations

import base64
import json
import logging

from tests.workerkit import boot_runtime, empty_image_workflow, run

SERVICE_ACCOUNT = json.dumps({"type": "service_account", "client_email": "w@p.iam.gserviceaccount.com",
                              "private_key": "-----BEGIN PRIVATE KEY-----\nSECRETKEYMATERIAL42\n-----END PRIVATE KEY-----\n",
                              "token_uri": "http://127.0.0.1:9/token"})


def test_secrets_absent_from_logs_errors_and_results(s3, tmp_path, caplog):
    env_secret = "env-secret-Zq81"
    request_secret = "request-secret-Pw73"
    caplog.set_level(logging.DEBUG)
    runtime, settings = boot_runtime(
        tmp_path, BUCKET_ENDPOINT_URL=s3.endpoint, BUCKET_ACCESS_KEY_ID=s3.access_key,
        BUCKET_SECRET_ACCESS_KEY=env_secret, BUCKET_NAME=s3.bucket, ALLOW_PRIVATE_URLS="true",
        ALLOW_HTTP_URLS="true", GDRIVE_CREDENTIALS=base64.b64encode(SERVICE_ACCOUNT.encode()).decode(),
        HF_TOKEN="hf_tokenvalue99")
    try:
        outcomes = [
            # The environment's (wrong) secret.
            run(runtime, settings, {"workflow": empty_image_workflow(), "output_config": {"storage": {"provider": "s3"}}}),
            # A request's own (wrong) secret through RunPod's s3Config.
        ]
        import asyncio

        from comfy_worker.job import run_job

        outcomes.append(asyncio.run(run_job(
            {"id": "j2", "input": {"workflow": empty_image_workflow(color=3), "output_config": {"storage": {
                "provider": "s3"}}}, "s3Config": {"accessId": s3.access_key, "accessSecret": request_secret,
                                                   "bucketName": s3.bucket, "endpointUrl": s3.endpoint}},
            runtime, settings, lambda p: None)))
        # And a successful upload with the right secret, whose URLs are presigned.
        outcomes.append(asyncio.run(run_job(
            {"id": "j3", "input": {"workflow": empty_image_workflow(color=4), "output_config": {"storage": {
                "provider": "s3"}}}, "s3Config": {"accessId": s3.access_key, "accessSecret": s3.secret_key,
                                                   "bucketName": s3.bucket, "endpointUrl": s3.endpoint}},
            runtime, settings, lambda p: None)))
        runtime.drain()
    finally:
        runtime.shutdown()
    assert json.loads(outcomes[0]["error"])["code"] == "UPLOAD_FAILED"
    assert json.loads(outcomes[1]["error"])["code"] == "UPLOAD_FAILED"
    assert outcomes[2]["outputs"][0]["url"].startswith(s3.endpoint)
    everything = caplog.text + json.dumps(outcomes) + repr(settings)
    for secret in (env_secret, request_secret, s3.secret_key, "SECRETKEYMATERIAL42", "hf_tokenvalue99"):
        assert secret not in everything, f"{secret!r} leaked"
