"""Storage is the operator's to scope: the security review's storage requests, sent through the worker (run_job
on the in-process FakeComfy) against a real SeaweedFS, with BUCKET_PATH_PREFIX=tenant-b.

With the worker's own credentials a caller stays under the operator's prefix and bucket(s), writes only keys
new to its job, and reads `s3://` inputs only where the operator allows; refusals come before any GPU time and
do not tell which objects exist. A request's own `s3Config` endpoint is reached path-style, at the address
that was checked.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest
import requests
from botocore.awsrequest import AWSRequest
from botocore.exceptions import HTTPClientError
from delivery_helpers import png

from comfy_worker.comfy.fake import FakeComfy
from comfy_worker.job import run_job
from comfy_worker.settings import Settings
from comfy_worker.storage import urlsafety
from comfy_worker.storage.pinning import PinnedSession
from comfy_worker.storage.urlsafety import UrlPolicy, check_url

from tests.captures import capture
from tests.workerkit import empty_image_workflow

CATALOGUE = capture("object_info.json")
VICTIM_KEY = "tenant-a/job-victim-123/ComfyUI_00001_.png"


def run(tmp_path: Path, settings: Settings, job_input: dict[str, Any],
        s3_config: dict[str, Any] | None = None) -> tuple[dict[str, Any], FakeComfy]:
    comfy = FakeComfy(CATALOGUE, root=tmp_path / "comfyui")
    job: dict[str, Any] = {"id": "job-7", "input": job_input}
    if s3_config is not None:
        job["s3Config"] = s3_config
    return asyncio.run(run_job(job, comfy, settings, lambda p: None)), comfy


def error_of(result: dict[str, Any]) -> dict[str, Any]:
    assert "error" in result, f"expected a failure, got {json.dumps(result)[:400]}"
    return json.loads(result["error"])


def to_s3(**storage: Any) -> dict[str, Any]:
    return {"workflow": empty_image_workflow(), "output_config": {"storage": {"provider": "s3", **storage}}}


@pytest.fixture()
def tenant(s3):  # type: ignore[no-untyped-def]
    """SeaweedFS with another tenant's object and a private object in a bucket the operator never set."""
    client = s3.client()
    client.put_object(Bucket=s3.bucket, Key=VICTIM_KEY, Body=b"victim")
    client.put_object(Bucket=s3.second_bucket, Key="config/app.env", Body=b"SECRET=1")
    client.put_object(Bucket=s3.second_bucket, Key="hr/passport-scan.png", Body=png())
    client.put_object(Bucket=s3.second_bucket, Key="in/cat.png", Body=png(5, 5))
    return s3


def settings_of(s3: Any, **overrides: Any) -> Settings:  # noqa: ANN401
    return s3.settings(bucket_path_prefix="tenant-b", **overrides)


# ---------------------------------------------------------------------------------------------- outputs


def test_a_caller_cannot_overwrite_another_tenants_object(tmp_path: Path, tenant: Any) -> None:
    result, comfy = run(tmp_path, settings_of(tenant), to_s3(path="tenant-a/job-victim-123",
                                                            key_template="ComfyUI_00001_.png"))
    err = error_of(result)
    assert err["code"] == "INVALID_INPUT"
    assert err["details"]["errors"][0]["field"] == "output_config.storage.key_template"
    assert not comfy.submitted, "refused before any GPU time"
    assert tenant.client().get_object(Bucket=tenant.bucket, Key=VICTIM_KEY)["Body"].read() == b"victim"


def test_a_callers_path_is_a_folder_inside_the_operators_prefix(tmp_path: Path, tenant: Any) -> None:
    result, _ = run(tmp_path, settings_of(tenant), to_s3(path="tenant-a/job-victim-123",
                                                        key_template="{job_id}/{filename}"))
    assert "error" not in result, result
    key = result["outputs"][0]["object_key"]
    assert key.startswith("tenant-b/tenant-a/job-victim-123/job-7/")
    assert [k for k in tenant.keys() if not k.startswith("tenant-b/")] == [VICTIM_KEY]
    for path in ("../tenant-a", "x/../../tenant-a"):
        err = error_of(run(tmp_path, settings_of(tenant), to_s3(path=path))[0])
        assert err["details"]["errors"][0]["field"] == "output_config.storage.path"


def test_a_bucket_the_operator_did_not_allow_is_refused(tmp_path: Path, tenant: Any) -> None:
    job = to_s3(bucket=tenant.second_bucket, path="", key_template="config/app.env")
    err = error_of(run(tmp_path, settings_of(tenant), job)[0])
    assert err["details"]["errors"][0]["field"] == "output_config.storage.bucket"
    assert tenant.client().get_object(Bucket=tenant.second_bucket, Key="config/app.env")["Body"].read() == b"SECRET=1"
    # Allowed by the operator: the bucket, still under the prefix, still with keys new to the job.
    allowed = settings_of(tenant, bucket_allowed_buckets=tenant.second_bucket)
    result, _ = run(tmp_path, allowed, to_s3(bucket=tenant.second_bucket))
    assert "error" not in result, result
    assert result["outputs"][0]["bucket"] == tenant.second_bucket
    assert result["outputs"][0]["object_key"].startswith("tenant-b/job-7/")


def test_with_its_own_credentials_a_caller_chooses_freely(tmp_path: Path, tenant: Any) -> None:
    own = {"accessId": tenant.access_key, "accessSecret": tenant.secret_key, "bucketName": tenant.second_bucket,
           "endpointUrl": tenant.endpoint}
    result, _ = run(tmp_path, settings_of(tenant), to_s3(path="anywhere", key_template="fixed.png"), own)
    assert "error" not in result, result
    assert result["outputs"][0]["object_key"] == "anywhere/fixed.png"


# ---------------------------------------------------------------------------------------------- s3:// inputs


def load_from(url: str) -> dict[str, Any]:
    return {"workflow": {"1": {"class_type": "LoadImage", "inputs": {"image": "in.png"}},
                         "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}}},
            "images": [{"name": "in.png", "image": url}]}


def test_s3_inputs_with_the_workers_credentials_are_off_by_default(tmp_path: Path, tenant: Any) -> None:
    result, comfy = run(tmp_path, settings_of(tenant), load_from("s3://second/hr/passport-scan.png"))
    err = error_of(result)
    assert err["code"] == "INVALID_INPUT" and err["details"]["errors"][0]["field"] == "images[0].image"
    assert "BUCKET_INPUT_PREFIXES" in err["message"]
    assert not comfy.submitted
    assert base64.b64encode(png()).decode()[:40] not in json.dumps(result)


def test_s3_inputs_only_under_the_allowed_prefixes(tmp_path: Path, tenant: Any) -> None:
    settings = settings_of(tenant, bucket_input_prefixes="second/in, nobucket/in")
    result, _ = run(tmp_path, settings, load_from("s3://second/in/cat.png"))
    assert "error" not in result, result
    for url in ("s3://second/hr/passport-scan.png", "s3://second/in/../hr/passport-scan.png", "s3://second/inx/a"):
        err = error_of(run(tmp_path, settings, load_from(url))[0])
        assert err["code"] == "INVALID_INPUT" and "outside the prefixes" in err["message"], err
    # A missing key and a missing bucket read the same: nothing tells which objects exist.
    missing_key = error_of(run(tmp_path, settings, load_from("s3://second/in/missing.png"))[0])
    missing_bucket = error_of(run(tmp_path, settings, load_from("s3://nobucket/in/cat.png"))[0])
    assert missing_key["code"] == missing_bucket["code"] == "INPUT_FETCH_FAILED"
    assert (missing_key["message"].replace("second/in/missing.png", "X")
            == missing_bucket["message"].replace("nobucket/in/cat.png", "X"))


# ---------------------------------------------------------------------------------------------- Drive


@pytest.mark.parametrize(("storage", "field"), [({"folder_id": "someone-elses-folder"}, "folder_id"),
                                                ({"share": True}, "share")])
def test_drive_folder_and_sharing_are_the_operators(tmp_path: Path, storage: dict[str, Any], field: str) -> None:
    settings = Settings(gdrive_credentials='{"type": "service_account"}', gdrive_folder_id="operator-folder")
    job = {"workflow": empty_image_workflow(), "output_config": {"storage": {"provider": "gdrive", **storage}}}
    result, comfy = run(tmp_path, settings, job)
    err = error_of(result)
    assert err["details"]["errors"][0]["field"] == f"output_config.storage.{field}"
    assert not comfy.submitted


# ---------------------------------------------------------------------------------------------- SSRF


@pytest.fixture()
def public_test_names(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """`s3.public.test` counts as public and resolves to loopback, once per check; `<bucket>.s3.public.test`
    (what virtual-hosted style connects to) also resolves to loopback but is internal. The system resolver
    knows neither name: a client that resolved again at connect time could not connect at all."""
    resolved: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        resolved.append(host)
        if host.endswith("s3.public.test"):
            return ["127.0.0.1"]
        raise OSError("unknown test name")

    def policy(settings: object) -> UrlPolicy:
        return UrlPolicy(allow_private=False, allow_http=True, resolver=resolver,
                         treat_as_public=lambda host, ip: host == "s3.public.test"
                         and ip == ipaddress.ip_address("127.0.0.1"))

    monkeypatch.setattr(urlsafety, "url_policy", policy)
    return resolved


def own_endpoint(s3: Any) -> dict[str, Any]:  # noqa: ANN401
    port = s3.endpoint.rsplit(":", 1)[1]
    return {"accessId": s3.access_key, "accessSecret": s3.secret_key, "bucketName": s3.second_bucket,
            "endpointUrl": f"http://s3.public.test:{port}"}


def test_a_requests_endpoint_is_never_reached_virtual_hosted(tmp_path: Path, tenant: Any,
                                                             public_test_names: list[str]) -> None:
    settings = Settings(allow_http_urls=True)  # no operator storage at all
    result, comfy = run(tmp_path, settings, to_s3(addressing_style="virtual"), own_endpoint(tenant))
    err = error_of(result)
    assert err["details"]["errors"][0]["field"] == "output_config.storage.addressing_style"
    assert not comfy.submitted
    assert not [h for h in public_test_names if h != "s3.public.test"], "no other name was even resolved"
    assert tenant.keys(tenant.second_bucket) == ["config/app.env", "hr/passport-scan.png", "in/cat.png"]


def test_a_requests_endpoint_is_reached_at_the_checked_address(tmp_path: Path, tenant: Any,
                                                               public_test_names: list[str]) -> None:
    settings = Settings(allow_http_urls=True, bucket_addressing_style="virtual")
    result, _ = run(tmp_path, settings, to_s3(key_template="{job_id}/{filename}"), own_endpoint(tenant))
    assert "error" not in result, result
    entry = result["outputs"][0]
    assert entry["object_key"] in tenant.keys(tenant.second_bucket)
    # Checked once, then connected to the pinned address: the name was never looked up again.
    assert public_test_names == ["s3.public.test"]
    # The presigned URL names the endpoint the caller gave, path-style.
    assert entry["url"].startswith(f"http://s3.public.test:{tenant.endpoint.rsplit(':', 1)[1]}/second/")
    direct = entry["url"].replace("s3.public.test", "127.0.0.1")
    assert requests.get(direct, headers={"Host": entry["url"].split("/")[2]}, timeout=10).status_code == 200


def test_a_private_endpoint_is_refused_before_any_connection(tmp_path: Path, tenant: Any) -> None:
    settings = Settings()  # https only, public only: the defaults
    for endpoint in (tenant.endpoint, "https://127.0.0.1:1/", "https://169.254.169.254/"):
        s3_config = {**own_endpoint(tenant), "endpointUrl": endpoint}
        err = error_of(run(tmp_path, settings, to_s3(), s3_config)[0])
        assert err["details"]["errors"][0]["field"] == "s3Config.endpointUrl"


def test_the_pinned_session_refuses_any_other_host() -> None:
    pin = check_url("http://s3.public.test:9000/", UrlPolicy(allow_http=True, resolver=lambda h, p: ["127.0.0.1"],
                                                              treat_as_public=lambda h, ip: True))
    session = PinnedSession(pin, timeout=(1, 1))
    for url in ("http://bucket.s3.public.test:9000/key", "http://s3.public.test:9001/key",
                "https://s3.public.test:9000/key", "http://169.254.169.254/latest/meta-data/"):
        request = AWSRequest(method="GET", url=url).prepare()
        with pytest.raises(HTTPClientError, match="refused"):
            session.send(request)
