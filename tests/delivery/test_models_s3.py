"""Models named by `s3://` URL, against a real SeaweedFS: read with the operator's credentials only under
BUCKET_INPUT_PREFIXES (none by default), with the caller's own `s3Config` anywhere it can read; fetched once into
the model cache; a missing object and a forbidden one read the same."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from comfy_worker.comfy.fake import FakeComfy
from comfy_worker.job import run_job
from comfy_worker.settings import Settings
from tests.captures import capture
from tests.modelserver import safetensors_bytes
from tests.test_models_by_url import lora_workflow

CATALOGUE = capture("object_info.json")
KEY = "models/loras/style.safetensors"


def run(tmp_path: Path, settings: Settings, url: str, s3_config: dict[str, Any] | None = None,
        job_id: str = "job-1") -> tuple[dict[str, Any], FakeComfy]:
    comfy = FakeComfy(CATALOGUE, root=tmp_path / "comfyui", models={"loras": []})
    job: dict[str, Any] = {"id": job_id, "input": {"workflow": lora_workflow(),
                                                   "models": [{"url": url, "folder": "loras"}]}}
    if s3_config:
        job["s3Config"] = s3_config
    return asyncio.run(run_job(job, comfy, settings, lambda p: None)), comfy


def failure_of(result: dict[str, Any]) -> dict[str, Any]:
    assert "error" in result, result
    error = json.loads(result["error"])
    assert error["code"] == "MODEL_FETCH_FAILED", error
    return error["details"]["failures"][0]


def test_s3_models_with_the_workers_credentials_only_under_the_input_prefixes(tmp_path: Path, s3: Any) -> None:
    body = safetensors_bytes(7)
    s3.client().put_object(Bucket=s3.bucket, Key=KEY, Body=body)
    s3.client().put_object(Bucket=s3.bucket, Key="private/style.safetensors", Body=body)
    url = f"s3://{s3.bucket}/{KEY}"
    cache = tmp_path / "cache"
    refused = failure_of(run(tmp_path, s3.settings(model_cache_dir=cache), url)[0])
    assert refused["reason"] == "host_not_allowed" and "BUCKET_INPUT_PREFIXES" in refused["message"]
    settings = s3.settings(model_cache_dir=cache, bucket_input_prefixes=f"{s3.bucket}/models")
    result, comfy = run(tmp_path, settings, url)
    assert "error" not in result, result
    [(_, graph, _)] = comfy.submitted
    assert (cache / "loras" / graph["1"]["inputs"]["lora_name"]).read_bytes() == body
    again, _ = run(tmp_path, settings, url, job_id="job-2")
    assert "error" not in again and "fetch_models" in again["timings"]
    outside = failure_of(run(tmp_path, settings, f"s3://{s3.bucket}/private/style.safetensors")[0])
    assert outside["reason"] == "host_not_allowed"
    missing = failure_of(run(tmp_path, settings, f"s3://{s3.bucket}/models/loras/absent.safetensors")[0])
    assert missing["reason"] == "http_status" and "does not exist or cannot be read" in missing["message"]


def test_s3_models_with_the_callers_own_credentials(tmp_path: Path, s3: Any) -> None:
    body = safetensors_bytes(8)
    s3.client().put_object(Bucket=s3.second_bucket, Key="mine/style.safetensors", Body=body)
    own = {"accessId": s3.access_key, "accessSecret": s3.secret_key, "endpointUrl": s3.endpoint}
    settings = Settings(model_cache_dir=tmp_path / "cache", allow_private_urls=True, allow_http_urls=True)
    result, _ = run(tmp_path, settings, f"s3://{s3.second_bucket}/mine/style.safetensors", own)
    assert "error" not in result, result
    assert s3.secret_key not in json.dumps(result)
