"""Model manifest downloads against a local HTTP server with Range, redirects and cut connections."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from comfy_worker.errors import ErrorCode
from comfy_worker.models.__main__ import main as cli_main
from comfy_worker.models.download import (
    DownloadError,
    DownloadOptions,
    Outcome,
    check_safetensors_header,
    ensure_models,
    is_verified,
    verify_file,
)
from comfy_worker.models.manifest import ModelEntry
from tests.httpserve import serve_http

FAST = DownloadOptions(workers=4, retries=3, retry_backoff=0.0, connect_timeout=5, read_timeout=10,
                       chunk_size=1024)


@dataclass
class Served:
    files: dict[str, bytes] = field(default_factory=dict)
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)  # (host, path, headers)
    cut_first: dict[str, int] = field(default_factory=dict)  # name -> how many requests to cut midway
    ignore_range: bool = False
    barrier: threading.Barrier | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, prefix: str = "") -> int:
        return sum(1 for _, path, _ in self.requests if path.startswith(prefix))


def _handler(served: Served) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            host = self.headers.get("Host", "").split(":")[0]
            with served.lock:
                served.requests.append((host, self.path, dict(self.headers.items())))
            parts = self.path.strip("/").split("/")
            if parts[0] == "redirect":  # /redirect/<host>/<name>: to the same file on another host name
                self.send_response(302)
                self.send_header("Location", f"http://{parts[1]}:{self.server.server_port}/files/{parts[2]}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if parts[0] == "relative":  # /relative/<name>: a relative Location on the same host
                self.send_response(301)
                self.send_header("Location", f"/files/{parts[1]}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if parts[0] == "private":  # requires the token
                if self.headers.get("Authorization") != "Bearer s3cret":
                    self.send_response(401)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                parts = ["files", parts[1]]
            if parts[0] != "files" or parts[1] not in served.files:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if served.barrier is not None:
                served.barrier.wait()
            self._send_file(parts[1], served.files[parts[1]])

        def _send_file(self, name: str, body: bytes) -> None:
            start = 0
            rng = self.headers.get("Range")
            if rng and not served.ignore_range:
                start = int(rng.removeprefix("bytes=").split("-")[0])
                if start >= len(body):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            chunk = body[start:]
            self.send_header("Content-Length", str(len(chunk)))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            with served.lock:
                cut = served.cut_first.get(name, 0)
                if cut:
                    served.cut_first[name] = cut - 1
            if cut:
                # Half the promised bytes, then the connection drops.
                self.wfile.write(chunk[: len(chunk) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(chunk)

    return Handler


@pytest.fixture
def server() -> Iterator[tuple[Served, int]]:
    served = Served()
    with serve_http(_handler(served)) as httpd:
        yield served, httpd.server_port


def _entry(port: int, name: str, body: bytes, *, path: str | None = None, folder: str = "checkpoints",
           **extra: object) -> ModelEntry:
    return ModelEntry(url=f"http://127.0.0.1:{port}/{path or 'files/' + name}", folder=folder, filename=name,
                      sha256=hashlib.sha256(body).hexdigest(), size=len(body), **extra)


def _blob(seed: int, size: int = 50_000) -> bytes:
    return hashlib.sha256(str(seed).encode()).digest() * (size // 32)


def test_parallel_downloads_store_verified_files(server: tuple[Served, int], tmp_path: Path) -> None:
    served, port = server
    bodies = {f"m{i}.ckpt": _blob(i) for i in range(3)}
    served.files.update(bodies)
    # Each response waits until all three requests have arrived: sequential downloads would break
    # the barrier and fail the test.
    served.barrier = threading.Barrier(3, timeout=20)
    entries = [_entry(port, name, body) for name, body in bodies.items()]
    results = ensure_models(entries, tmp_path, options=FAST)
    assert [r.outcome for r in results] == [Outcome.DOWNLOADED] * 3
    for entry, body in zip(entries, bodies.values()):
        assert (tmp_path / "checkpoints" / entry.filename).read_bytes() == body
        assert is_verified(entry, tmp_path)
    # Nothing but the finished files is visible in the folder ComfyUI lists.
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == sorted(bodies)


def test_second_run_transfers_nothing(server: tuple[Served, int], tmp_path: Path) -> None:
    served, port = server
    served.files["a.pt"] = _blob(1)
    entry = _entry(port, "a.pt", served.files["a.pt"])
    ensure_models([entry], tmp_path, options=FAST)
    before = len(served.requests)
    results = ensure_models([entry], tmp_path, options=FAST)
    assert len(served.requests) == before
    assert results[0].outcome is Outcome.PRESENT and results[0].bytes_transferred == 0


def test_cut_connection_resumes_with_range(server: tuple[Served, int], tmp_path: Path) -> None:
    served, port = server
    body = _blob(7, 200_000)
    served.files["big.ckpt"] = body
    served.cut_first["big.ckpt"] = 1
    entry = _entry(port, "big.ckpt", body)
    ensure_models([entry], tmp_path, options=FAST)
    assert (tmp_path / "checkpoints" / "big.ckpt").read_bytes() == body
    ranges = [h.get("Range") for _, p, h in served.requests if p == "/files/big.ckpt"]
    assert ranges[0] is None
    # Resumed from what had reached the disk: past the start, at most where the cut happened.
    resumed_at = int(ranges[1].removeprefix("bytes=").rstrip("-"))
    assert 0 < resumed_at <= len(body) // 2


def test_partial_file_from_an_earlier_run_is_resumed(server: tuple[Served, int], tmp_path: Path) -> None:
    served, port = server
    body = _blob(3, 100_000)
    served.files["v.safetensors.bin"] = body
    entry = _entry(port, "v.safetensors.bin", body, folder="vae")
    part = tmp_path / ".partial" / "vae" / "v.safetensors.bin.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(body[:30_000])
    result = ensure_models([entry], tmp_path, options=FAST)[0]
    assert result.bytes_transferred == len(body) - 30_000
    assert served.requests[0][2]["Range"] == "bytes=30000-"
    assert (tmp_path / "vae" / "v.safetensors.bin").read_bytes() == body
    assert not part.exists()


def test_server_ignoring_range_restarts_cleanly(server: tuple[Served, int], tmp_path: Path) -> None:
    served, port = server
    body = _blob(4)
    served.files["r.pt"] = body
    served.ignore_range = True
    entry = _entry(port, "r.pt", body)
    part = tmp_path / ".partial" / "checkpoints" / "r.pt.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"stale bytes from another file")
    ensure_models([entry], tmp_path, options=FAST)
    assert (tmp_path / "checkpoints" / "r.pt").read_bytes() == body


def test_checksum_mismatch_is_deleted_and_reported(server: tuple[Served, int], tmp_path: Path) -> None:
    served, port = server
    served.files["bad.pt"] = _blob(5)
    served.files["good.pt"] = _blob(6)
    bad = ModelEntry(url=f"http://127.0.0.1:{port}/files/bad.pt", folder="loras", filename="bad.pt",
                     sha256="0" * 64, name="my bad lora")
    good = _entry(port, "good.pt", served.files["good.pt"], folder="loras")
    with pytest.raises(DownloadError) as caught:
        ensure_models([bad, good], tmp_path, options=FAST)
    [failure] = caught.value.failures
    assert failure.label == "my bad lora"
    assert "sha256 mismatch" in failure.reason and "0" * 64 in failure.reason
    assert "my bad lora" in str(caught.value)
    assert not (tmp_path / "loras" / "bad.pt").exists()
    assert not (tmp_path / ".partial" / "loras" / "bad.pt.part").exists()
    # The other entry still completed.
    assert (tmp_path / "loras" / "good.pt").read_bytes() == served.files["good.pt"]
    error = caught.value.to_worker_error()
    assert error.code is ErrorCode.MISSING_MODELS
    assert error.details["download_failures"][0]["model"] == "my bad lora"


def test_http_error_names_entry_without_retrying(server: tuple[Served, int], tmp_path: Path) -> None:
    served, port = server
    entry = ModelEntry(url=f"http://127.0.0.1:{port}/files/absent.pt?sig=abc", folder="vae",
                       filename="absent.pt", sha256="1" * 64)
    with pytest.raises(DownloadError) as caught:
        ensure_models([entry], tmp_path, options=FAST)
    assert "HTTP 404" in caught.value.failures[0].reason
    assert caught.value.failures[0].label == "vae/absent.pt"
    assert "sig=abc" not in str(caught.value)  # query strings (signatures) stay out of messages
    assert served.count("/files/absent.pt") == 1


def test_redirects_followed_and_token_kept_to_its_host(server: tuple[Served, int], tmp_path: Path) -> None:
    served, port = server
    served.files["x.pt"] = _blob(8)
    served.files["y.pt"] = _blob(9)
    cross = _entry(port, "x.pt", served.files["x.pt"], path="redirect/localhost/x.pt", token_env="HF_TOKEN")
    same = _entry(port, "y.pt", served.files["y.pt"], path="relative/y.pt", token_env="HF_TOKEN")
    ensure_models([cross, same], tmp_path, options=FAST, environ={"HF_TOKEN": "s3cret"})
    assert (tmp_path / "checkpoints" / "x.pt").read_bytes() == served.files["x.pt"]
    assert (tmp_path / "checkpoints" / "y.pt").read_bytes() == served.files["y.pt"]
    auth = {(host, path): headers.get("Authorization") for host, path, headers in served.requests}
    assert auth[("127.0.0.1", "/redirect/localhost/x.pt")] == "Bearer s3cret"
    assert auth[("localhost", "/files/x.pt")] is None  # another host: no token
    assert auth[("127.0.0.1", "/relative/y.pt")] == "Bearer s3cret"
    assert auth[("127.0.0.1", "/files/y.pt")] == "Bearer s3cret"  # same host after the redirect


def test_missing_token_gives_a_hint(server: tuple[Served, int], tmp_path: Path) -> None:
    served, port = server
    served.files["p.pt"] = _blob(10)
    entry = _entry(port, "p.pt", served.files["p.pt"], path="private/p.pt", token_env="CIVITAI_TOKEN")
    with pytest.raises(DownloadError) as caught:
        ensure_models([entry], tmp_path, options=FAST, environ={})
    assert "HTTP 401" in caught.value.failures[0].reason and "CIVITAI_TOKEN" in caught.value.failures[0].reason
    ensure_models([entry], tmp_path, options=FAST, environ={"CIVITAI_TOKEN": "s3cret"})
    assert (tmp_path / "checkpoints" / "p.pt").is_file()


def test_present_file_without_marker_is_hashed_not_fetched(server: tuple[Served, int], tmp_path: Path) -> None:
    served, port = server
    body = _blob(11)
    entry = _entry(port, "baked.pt", body)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "baked.pt").write_bytes(body)
    assert ensure_models([entry], tmp_path, options=FAST)[0].outcome is Outcome.PRESENT
    assert served.requests == []
    assert is_verified(entry, tmp_path)


def test_changed_file_is_fetched_again(server: tuple[Served, int], tmp_path: Path) -> None:
    served, port = server
    body = _blob(12)
    served.files["c.pt"] = body
    entry = _entry(port, "c.pt", body)
    ensure_models([entry], tmp_path, options=FAST)
    (tmp_path / "checkpoints" / "c.pt").write_bytes(b"corrupted" * 10)
    assert not is_verified(entry, tmp_path)
    assert verify_file(entry, tmp_path) is not None
    assert ensure_models([entry], tmp_path, options=FAST)[0].outcome is Outcome.DOWNLOADED
    assert (tmp_path / "checkpoints" / "c.pt").read_bytes() == body


def _tiny_safetensors(path: Path) -> bytes:
    import numpy as np
    from safetensors.numpy import save_file

    save_file({"weight": np.arange(6, dtype=np.float32).reshape(2, 3)}, str(path))
    return path.read_bytes()


def test_safetensors_header_is_checked(server: tuple[Served, int], tmp_path: Path) -> None:
    served, port = server
    good = _tiny_safetensors(tmp_path / "made.safetensors")
    served.files["ok.safetensors"] = good
    served.files["html.safetensors"] = b"<html>Sign in to download</html>"
    ok = _entry(port, "ok.safetensors", good)
    # The manifest's checksum matches the bytes, but they are an error page, not tensors.
    html = _entry(port, "html.safetensors", served.files["html.safetensors"])
    root = tmp_path / "models"
    with pytest.raises(DownloadError) as caught:
        ensure_models([ok, html], root, options=FAST)
    [failure] = caught.value.failures
    assert failure.label == "checkpoints/html.safetensors"
    assert "not a valid safetensors file" in failure.reason
    assert (root / "checkpoints" / "ok.safetensors").read_bytes() == good
    assert not (root / "checkpoints" / "html.safetensors").exists()


def test_safetensors_check_does_not_import_torch(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = tmp_path / "t.safetensors"
    _tiny_safetensors(path)
    code = ("import sys; from pathlib import Path; "
            "from comfy_worker.models.download import check_safetensors_header as c; "
            f"assert c(Path({str(path)!r})) is None; assert 'torch' not in sys.modules, 'torch imported'")
    src = Path(__file__).resolve().parents[1] / "src"
    subprocess.run([sys.executable, "-c", code], check=True, env={"PYTHONPATH": str(src)}, timeout=60)
    assert check_safetensors_header(tmp_path / "made-up") is not None


def test_cli_download_verify_and_bad_manifest(server: tuple[Served, int], tmp_path: Path) -> None:
    served, port = server
    served.files["cli.pt"] = _blob(13)
    manifest = tmp_path / "models.yaml"
    manifest.write_text(
        "models:\n"
        f"  - url: http://127.0.0.1:{port}/files/cli.pt\n"
        "    folder: upscale_models\n"
        "    filename: sub/cli.pt\n"
        f"    sha256: {hashlib.sha256(served.files['cli.pt']).hexdigest()}\n"
        "    fetch: build\n"
        f"  - url: http://127.0.0.1:{port}/files/never.pt\n"
        "    folder: loras\n"
        "    filename: never.pt\n"
        f"    sha256: '{'2' * 64}'\n"
        "    fetch: on_demand\n")
    root = tmp_path / "models"
    args = ["--manifest", str(manifest), "--models-root", str(root), "--when", "build"]
    assert cli_main(["verify", *args]) == 1
    assert cli_main(["download", *args]) == 0
    assert (root / "upscale_models" / "sub" / "cli.pt").is_file()
    assert served.count("/files/never.pt") == 0  # on_demand entries are not fetched at build time
    assert cli_main(["verify", *args]) == 0
    assert cli_main(["download", "--manifest", str(manifest), "--models-root", str(root), "--retries", "0"]) == 1
    manifest.write_text(json.dumps({"models": [{"url": "ftp://x/y", "folder": "vae", "filename": "a",
                                                "sha256": "0" * 64}]}))
    assert cli_main(["list", "--manifest", str(manifest)]) == 2


def test_options_follow_settings() -> None:
    from comfy_worker.models.download import options_from_settings
    from comfy_worker.settings import Settings

    options = options_from_settings(Settings.from_env({"MODEL_DOWNLOAD_WORKERS": "2",
                                                       "MODEL_DOWNLOAD_TIMEOUT": "5",
                                                       "MODEL_DOWNLOAD_RETRIES": "0"}))
    assert (options.workers, options.read_timeout, options.retries) == (2, 5.0, 0)
