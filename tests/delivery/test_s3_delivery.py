"""S3 delivery against a real SeaweedFS server on loopback."""

from __future__ import annotations

import hashlib
import json
import os

import pytest
import requests
from botocore.exceptions import ClientError
from delivery_helpers import ctx, output, png, text_output

from comfy_worker.delivery import deliver_outputs
from comfy_worker.delivery.s3 import S3Delivery
from comfy_worker.schema import S3Config
from comfy_worker.storage.s3 import build_client, client_for, s3_target
from comfy_worker.errors import ErrorCode, WorkerError
from comfy_worker.schema import OutputConfig, StorageConfig


def _s3_config(**storage: object) -> OutputConfig:
    return OutputConfig(storage=StorageConfig(provider="s3", **storage))


def test_output_delivered_and_presigned_url_returns_identical_bytes(s3):
    image = png(32, 16)
    video = os.urandom(200_000)
    result = deliver_outputs(ctx(), [output("ComfyUI_00001_.png", image), output("clip.mp4", video, key="video",
                                                                                   node_id="15"),
                                     text_output("a caption")], _s3_config(), None, s3.settings())
    image_entry, video_entry, text_entry = result.entries
    assert result.provider == "s3"
    assert image_entry.object_key == "job-123/ComfyUI_00001_.png" and image_entry.bucket == "outputs"
    assert (image_entry.width, image_entry.height) == (32, 16)
    for entry, data in ((image_entry, image), (video_entry, video)):
        fetched = requests.get(entry.url, timeout=10)
        assert fetched.status_code == 200
        assert hashlib.sha256(fetched.content).hexdigest() == entry.sha256 == hashlib.sha256(data).hexdigest()
        assert entry.data is None and entry.storage == "s3" and entry.url_expires_at
    assert "X-Amz-Signature=" in image_entry.url
    assert text_entry.text == "a caption" and text_entry.url is None
    assert s3.keys() == ["job-123/ComfyUI_00001_.png", "job-123/clip.mp4"]
    head = s3.client().head_object(Bucket="outputs", Key="job-123/clip.mp4")
    assert head["ContentType"] == "video/mp4"
    assert [(i.type, i.filename, i.data) for i in result.images] == [
        ("s3_url", "ComfyUI_00001_.png", image_entry.url)]
    # The signature is checked: a tampered URL is refused.
    assert requests.get(image_entry.url.replace("X-Amz-Signature=", "X-Amz-Signature=0"), timeout=10).status_code == 403


def test_large_output_is_uploaded_in_parts(s3, tmp_path):
    path = tmp_path / "big.bin"
    path.write_bytes(os.urandom(64 * 1024 * 1024 + 123))
    data = path.read_bytes()
    settings = s3.settings(upload_multipart_threshold=8 * 1024 * 1024, upload_part_size=8 * 1024 * 1024)
    result = deliver_outputs(ctx(), [output("big.mp4", data, key="video")], _s3_config(), None, settings)
    entry = result.entries[0]
    head = s3.client().head_object(Bucket="outputs", Key=entry.object_key)
    assert head["ContentLength"] == len(data)
    assert head["ETag"].strip('"').endswith("-9")  # 8 full parts of 8 MiB and a ninth with the rest
    fetched = requests.get(entry.url, timeout=60)
    assert hashlib.sha256(fetched.content).hexdigest() == hashlib.sha256(data).hexdigest() == entry.sha256


def test_request_s3config_uses_its_own_bucket(s3):
    s3_config = S3Config(**{"accessId": s3.access_key, "accessSecret": s3.secret_key, "bucketName": "second",
                 "endpointUrl": s3.endpoint})
    # The environment holds no credentials at all: everything comes from the request.
    settings = s3.settings(bucket_access_key_id=None, bucket_secret_access_key=None, bucket_endpoint_url=None,
                           bucket_name=None)
    config = _s3_config(path="renders", key_template="{date}/{node_id}-{index}.{ext}")
    result = deliver_outputs(ctx(), [output("a.png", png())], config, s3_config, settings)
    entry = result.entries[0]
    assert entry.bucket == "second"
    assert entry.object_key.startswith("renders/") and entry.object_key.endswith("/9-0.png")
    assert s3.keys("second") == [entry.object_key] and s3.keys() == []
    assert requests.get(entry.url, timeout=10).content == png()


def test_wrong_secret_fails_with_upload_failed_and_nothing_delivered(s3):
    s3_config = S3Config(**{"accessId": s3.access_key, "accessSecret": "not-the-secret-xyz", "bucketName": "outputs",
                 "endpointUrl": s3.endpoint})
    outputs = [output("one.png", png()), output("two.png", png(4, 4))]
    with pytest.raises(WorkerError) as caught:
        deliver_outputs(ctx(), outputs, _s3_config(), s3_config, s3.settings())
    err = caught.value
    assert err.code is ErrorCode.UPLOAD_FAILED and err.retryable
    assert err.details["delivered"] == [] and err.details["not_delivered"] == ["one.png", "two.png"]
    assert {f["filename"] for f in err.details["failed"]} == {"one.png", "two.png"}
    assert "SignatureDoesNotMatch" in err.details["failed"][0]["reason"]
    payload = err.to_error_string("job-123")
    assert "not-the-secret-xyz" not in payload and s3.secret_key not in payload
    assert s3.keys() == []


def _fail_uploads(client, fails):
    """Make the client's uploads (single requests and multipart) raise `fails(key)` when it returns one."""
    real_put, real_multipart = client.put_object, client.upload_fileobj

    def put_object(**kwargs):
        error = fails(kwargs["Key"])
        if error is not None:
            raise error
        return real_put(**kwargs)

    def upload_fileobj(fileobj, bucket, key, **kwargs):
        error = fails(key)
        if error is not None:
            raise error
        return real_multipart(fileobj, bucket, key, **kwargs)

    client.put_object, client.upload_fileobj = put_object, upload_fileobj
    return client


def _client_error(code, status):
    return ClientError({"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
                       "PutObject")


def test_partial_failure_removes_what_was_uploaded(s3):
    def flaky_factory(target, settings):
        return _fail_uploads(build_client(target, settings),
                             lambda key: _client_error("AccessDenied", 403) if key.endswith("bad.png") else None)

    settings = s3.settings(upload_concurrency=1)
    target = s3_target(settings, None, StorageConfig(provider="s3"))
    delivery = S3Delivery(target, settings, StorageConfig(provider="s3"), client_factory=flaky_factory)
    with pytest.raises(WorkerError) as caught:
        delivery.deliver(ctx(), [output("good.png", png()), output("bad.png", png())])
    assert caught.value.code is ErrorCode.UPLOAD_FAILED
    assert [f["filename"] for f in caught.value.details["failed"]] == ["bad.png"]
    assert caught.value.details["delivered"] == []
    assert s3.keys() == []  # good.png was uploaded, then removed


@pytest.mark.parametrize("size", ["one request", "multipart"])
def test_transient_errors_are_retried(s3, size):
    calls = {"n": 0}

    def flaky_factory(target, settings):
        def fails(key):
            calls["n"] += 1
            return _client_error("SlowDown", 503) if calls["n"] <= 2 else None

        return _fail_uploads(build_client(target, settings), fails)

    threshold = 5 * 1024 * 1024
    settings = s3.settings(upload_retries=3, upload_multipart_threshold=threshold, upload_part_size=threshold)
    data = png() if size == "one request" else os.urandom(threshold + 1)
    storage = StorageConfig(provider="s3")
    delivery = S3Delivery(s3_target(settings, None, storage), settings, storage, client_factory=flaky_factory,
                          backoff_base=0.01)
    entries = delivery.deliver(ctx(), [output("x.png", data)])
    assert calls["n"] == 3 and s3.keys() == [entries[0].object_key]
    stored = s3.client().get_object(Bucket=s3.bucket, Key=entries[0].object_key)["Body"].read()
    assert stored == data


def test_transient_errors_give_up_after_the_configured_tries(s3):
    def always_slow(target, settings):
        return _fail_uploads(build_client(target, settings), lambda key: _client_error("ServiceUnavailable", 503))

    settings = s3.settings(upload_retries=2)
    storage = StorageConfig(provider="s3")
    delivery = S3Delivery(s3_target(settings, None, storage), settings, storage, client_factory=always_slow,
                          backoff_base=0.01)
    with pytest.raises(WorkerError) as caught:
        delivery.deliver(ctx(), [output("x.png", png())])
    assert caught.value.code is ErrorCode.UPLOAD_FAILED
    assert "ServiceUnavailable" in caught.value.details["failed"][0]["reason"]


def test_public_bucket_gives_plain_urls(s3):
    settings = s3.settings(bucket_public_url="https://cdn.example.com/media/")
    result = deliver_outputs(ctx(), [output("a b.png", png())], _s3_config(), None, settings)
    assert result.entries[0].url == "https://cdn.example.com/media/job-123/a%20b.png"
    assert result.entries[0].url_expires_at is None
    plain = deliver_outputs(ctx("job-2"), [output("c.png", png())], _s3_config(presign=False), None,
                            s3.settings())
    assert plain.entries[0].url == f"{s3.endpoint}/outputs/job-2/c.png"


def test_key_template_that_collides_is_refused_before_any_upload(s3):
    config = _s3_config(key_template="{job_id}/fixed.png")
    with pytest.raises(WorkerError) as caught:
        deliver_outputs(ctx(), [output("a.png", png()), output("b.png", png())], config, None, s3.settings())
    assert caught.value.code is ErrorCode.INVALID_INPUT
    assert caught.value.details["errors"][0]["field"] == "output_config.storage.key_template"
    assert s3.keys() == []
    with pytest.raises(WorkerError) as unknown:
        deliver_outputs(ctx(), [output("a.png", png())], _s3_config(key_template="{secret}/{filename}"), None,
                        s3.settings())
    assert "unknown placeholder" in unknown.value.message


def test_keys_cannot_escape_the_prefix(s3):
    outputs = [output("../../etc/passwd.png", png())]
    result = deliver_outputs(ctx("../x"), outputs, _s3_config(path="p"), None, s3.settings())
    assert ".." not in result.entries[0].object_key.split("/")
    assert result.entries[0].object_key.startswith("p/")


def test_request_endpoint_on_private_address_is_refused_unless_allowed(s3):
    s3_config = S3Config(**{"accessId": "a", "accessSecret": "b", "bucketName": "outputs", "endpointUrl": s3.endpoint})
    with pytest.raises(WorkerError) as caught:
        deliver_outputs(ctx(), [output("a.png", png())], _s3_config(), s3_config,
                        s3.settings(allow_private_urls=False))
    assert caught.value.code is ErrorCode.INVALID_INPUT
    assert caught.value.details["errors"][0]["field"] == "s3Config.endpointUrl"
    assert "non-public" in caught.value.message


def test_target_repr_and_errors_hide_credentials(s3):
    target = s3_target(s3.settings(), None, StorageConfig())
    assert s3.secret_key not in repr(target) and s3.access_key not in repr(target)
    dumped = json.dumps(s3.settings().model_dump(mode="json"))
    assert s3.secret_key not in dumped


def test_jobs_share_one_client_per_target_and_credentials(s3):
    settings = s3.settings()
    target = s3_target(settings, None, StorageConfig(provider="s3"))
    assert client_for(target, settings) is client_for(target, settings)
    other_secret = s3_target(s3.settings(bucket_secret_access_key="another-secret"), None,
                             StorageConfig(provider="s3"))
    assert client_for(other_secret, settings) is not client_for(target, settings)
    # A shared client still sees every job's own bucket, key and content.
    first = deliver_outputs(ctx("job-a"), [output("a.png", png(8, 8))], _s3_config(), None, settings)
    second = deliver_outputs(ctx("job-b"), [output("b.png", png(9, 9))], _s3_config(), None, settings)
    assert s3.keys() == [first.entries[0].object_key, second.entries[0].object_key]


def test_kept_clients_are_bounded(s3):
    from comfy_worker.storage import s3 as storage_s3

    settings = s3.settings()
    for i in range(storage_s3._CLIENTS_KEPT + 5):
        client_for(s3_target(s3.settings(bucket_access_key_id=f"key-{i}"), None, StorageConfig(provider="s3")),
                   settings)
    assert len(storage_s3._clients) == storage_s3._CLIENTS_KEPT
