"""Google Drive delivery through google-api-python-client's static discovery document, against a local
Drive v3 server over TLS with a real service-account token exchange."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from delivery_helpers import ctx, output, png, self_signed_cert, text_output
from drive_server import DriveServer

from comfy_worker.delivery import deliver_outputs
from comfy_worker.delivery.gdrive import GDriveDelivery, build_drive, load_service_account_info
from comfy_worker.errors import ErrorCode, WorkerError
from comfy_worker.schema import OutputConfig, StorageConfig
from comfy_worker.settings import Settings


@pytest.fixture()
def drive(tmp_path) -> Iterator[tuple[DriveServer, dict, str]]:
    cert, key = self_signed_cert(tmp_path)
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = sa_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                               serialization.NoEncryption()).decode()
    with DriveServer(str(cert), str(key), sa_key.public_key()) as server:
        info = {"type": "service_account", "project_id": "test", "private_key_id": "k1", "private_key": pem,
                "client_email": "worker@test.iam.gserviceaccount.com", "client_id": "1",
                "token_uri": server.state.token_uri}
        yield server, info, str(cert)


def _settings(server: DriveServer, info: dict, **kw: object) -> Settings:
    return Settings(gdrive_credentials=json.dumps(info), gdrive_api_endpoint=server.url + "/drive/v3/",
                    gdrive_folder_id="folder-1", **kw)


def _delivery(server, info, cert, storage=None, **kw) -> GDriveDelivery:  # type: ignore[no-untyped-def]
    settings = _settings(server, info, **kw)
    return GDriveDelivery(settings, storage or StorageConfig(provider="gdrive"),
                          service_factory=lambda s: build_drive(s, ca_certs=cert), backoff_base=0.01)


def test_small_and_large_outputs_are_uploaded_with_links(drive):
    server, info, cert = drive
    small = png(16, 16)
    large = os.urandom(1024 * 1024 + 17)
    # A request may ask for sharing where the operator allows it (GDRIVE_ALLOW_CALLER_SHARE).
    delivery = _delivery(server, info, cert, gdrive_chunk_size=256 * 1024, gdrive_allow_caller_share=True,
                         storage=StorageConfig(provider="gdrive", share=True))
    entries = delivery.deliver(ctx(), [output("a.png", small), output("v.mp4", large, key="video"),
                                       text_output("caption")])
    image, video, text = entries
    for entry, data in ((image, small), (video, large)):
        stored = server.state.files[entry.file_id]
        assert stored.content == data and hashlib.sha256(stored.content).hexdigest() == entry.sha256
        assert stored.parents == ["folder-1"] and stored.permissions == [{"type": "anyone", "role": "reader"}]
        assert entry.storage == "gdrive" and entry.view_url.endswith("/view?usp=drivesdk")
        assert entry.url == f"https://drive.google.com/uc?id={entry.file_id}&export=download"
    assert server.state.files[image.file_id].name == "a.png"
    assert server.state.files[video.file_id].mime_type == "video/mp4"
    assert text.text == "caption"
    uploads = [(m, q.get("uploadType", [""])[0]) for m, p, q in server.state.requests if p.startswith("/upload")]
    assert ("POST", "multipart") in uploads and ("POST", "resumable") in uploads
    assert sum(1 for m, _ in uploads if m == "PUT") == 5  # 1 MiB + 17 bytes in 256 KiB chunks
    assert all(q.get("supportsAllDrives") == ["true"] for m, p, q in server.state.requests
               if m == "POST" and p != "/token")
    assert len(server.state.tokens) == 1  # one real token exchange, reused


def test_failed_chunk_is_retried(drive):
    server, info, cert = drive
    server.state.fail_chunks = 1
    data = os.urandom(600 * 1024)
    entries = _delivery(server, info, cert, gdrive_chunk_size=256 * 1024).deliver(ctx(), [output("v.mp4", data,
                                                                                                   key="video")])
    assert server.state.files[entries[0].file_id].content == data


def test_refused_upload_is_upload_failed_and_nothing_delivered(drive):
    server, info, cert = drive
    delivery = _delivery(server, info, cert)
    first = delivery.deliver(ctx(), [output("keep.png", png())])  # an earlier job's file stays
    server.state.refuse_uploads = True
    with pytest.raises(WorkerError) as caught:
        delivery.deliver(ctx(), [output("a.png", png()), output("b.png", png())])
    err = caught.value
    assert err.code is ErrorCode.UPLOAD_FAILED and err.details["delivered"] == []
    assert err.details["not_delivered"] == ["a.png", "b.png"]
    assert "HTTP 403" in err.details["failed"][0]["reason"]
    assert list(server.state.files) == [first[0].file_id]
    assert "PRIVATE KEY" not in err.to_error_string()


def test_partial_failure_removes_files_already_created(drive):
    server, info, cert = drive
    delivery = _delivery(server, info, cert)
    original = delivery._upload
    calls = {"n": 0}

    def second_fails(service, item, name, folder):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 2:
            server.state.refuse_uploads = True
        return original(service, item, name, folder)

    delivery._upload = second_fails  # type: ignore[method-assign]
    with pytest.raises(WorkerError):
        delivery.deliver(ctx(), [output("a.png", png()), output("b.png", png())])
    assert server.state.files == {}


def test_wrong_key_is_refused_by_the_token_endpoint(drive):
    server, info, cert = drive
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    info = dict(info, private_key=other.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                      serialization.NoEncryption()).decode())
    with pytest.raises(WorkerError) as caught:
        _delivery(server, info, cert).deliver(ctx(), [output("a.png", png())])
    assert caught.value.code is ErrorCode.UPLOAD_FAILED and server.state.files == {}


def test_credentials_forms(tmp_path, drive):
    _, info, _ = drive
    text = json.dumps(info)
    path = tmp_path / "sa.json"
    path.write_text(text)
    for raw in (text, base64.b64encode(text.encode()).decode(), str(path)):
        assert load_service_account_info(raw)["client_email"] == info["client_email"]
    with pytest.raises(WorkerError, match="neither JSON"):
        load_service_account_info("not a key")
    with pytest.raises(WorkerError, match="service-account"):
        load_service_account_info('{"type": "authorized_user"}')


def test_router_picks_gdrive_on_request(drive, monkeypatch):
    server, info, cert = drive
    monkeypatch.setattr("comfy_worker.delivery.gdrive.build_drive.__kwdefaults__", {"ca_certs": cert})
    result = deliver_outputs(ctx(), [output("a.png", png())],
                             OutputConfig(storage=StorageConfig(provider="gdrive", folder_id="other")), None,
                             _settings(server, info, gdrive_allow_caller_folder=True))
    entry = result.entries[0]
    assert result.provider == "gdrive" and server.state.files[entry.file_id].parents == ["other"]
    assert result.images[0].type == "s3_url" and result.images[0].data == entry.url


def test_withdraw_removes_what_was_delivered(drive):
    """An output delivered while the graph ran, of a job that then failed and told no one, is removed."""
    server, info, cert = drive
    delivery = _delivery(server, info, cert)
    entries = delivery.deliver(ctx(), [output("a.png", png(8, 8)), text_output("caption")])
    assert len(server.state.files) == 1
    delivery.withdraw(entries)
    assert server.state.files == {}
