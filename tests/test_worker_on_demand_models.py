"""A job whose workflow names a missing model that models.yaml lists as on_demand gets it downloaded first."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import json
from collections.abc import Callable, Iterator

import pytest
import yaml

from .captures import capture
from .httpserve import serve_http
from .workerkit import boot_runtime, error_of, run


def _payload_handler(payload: bytes) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    return Handler


@pytest.fixture
def serve() -> Iterator[Callable[[bytes], http.server.ThreadingHTTPServer]]:
    """Serves given bytes at every path, until the test ends."""
    with contextlib.ExitStack() as servers:
        yield lambda payload: servers.enter_context(serve_http(_payload_handler(payload)))


def sd_workflow(ckpt: str) -> dict:
    wf = json.loads(json.dumps(capture("sd_txt2img_run1_request.json")["prompt"]))
    for node in wf.values():
        if node["class_type"] == "CheckpointLoaderSimple":
            node["inputs"]["ckpt_name"] = ckpt
        if node["class_type"] == "KSampler":
            node["inputs"]["steps"] = 2
    return wf


def test_missing_on_demand_model_is_fetched_then_the_job_runs(tmp_path, serve):
    payload = b"not really a checkpoint, but bytes with a known hash" * 100
    server = serve(payload)
    manifest = tmp_path / "models.yaml"
    manifest.write_text(yaml.safe_dump({"models": [
        {"url": f"http://127.0.0.1:{server.server_port}/tiny.ckpt", "folder": "checkpoints",
         "filename": "tiny.ckpt", "sha256": hashlib.sha256(payload).hexdigest(), "fetch": "on_demand"},
    ]}))
    models_root = tmp_path / "comfyui" / "models"
    runtime, settings = boot_runtime(tmp_path, MODELS_MANIFEST=str(manifest), MODEL_DOWNLOAD_ROOT=str(models_root))
    try:
        result = run(runtime, settings, {"workflow": sd_workflow("tiny.ckpt")})
        assert "error" not in result, result
        assert (models_root / "checkpoints" / "tiny.ckpt").read_bytes() == payload
        assert "fetch_models" in result["timings"]
        # A model the manifest does not list stays a clear MISSING_MODELS error, with close names.
        err = error_of(run(runtime, settings, {"workflow": sd_workflow("tiny2.ckpt")}, job_id="other"))
        assert err["code"] == "MISSING_MODELS"
        [missing] = err["details"]["missing_models"]
        assert missing["file"] == "tiny2.ckpt" and "tiny.ckpt" in missing["closest"]
    finally:
        runtime.shutdown()


def test_start_models_are_fetched_before_the_worker_is_ready(tmp_path, serve):
    from comfy_worker.app import create_worker
    from comfy_worker.settings import Settings

    from .workerkit import worker_env

    payload = b"start-time model" * 1000
    server = serve(payload)
    manifest = tmp_path / "models.yaml"
    manifest.write_text(yaml.safe_dump({"models": [
        {"url": f"http://127.0.0.1:{server.server_port}/base.ckpt", "folder": "checkpoints",
         "filename": "base.ckpt", "sha256": hashlib.sha256(payload).hexdigest(), "fetch": "start"},
        {"url": f"http://127.0.0.1:{server.server_port}/later.ckpt", "folder": "checkpoints",
         "filename": "later.ckpt", "sha256": "0" * 64, "fetch": "on_demand"},
    ]}))
    models_root = tmp_path / "models"
    app = create_worker(Settings.from_env(worker_env(tmp_path, MODELS_MANIFEST=str(manifest),
                                                     MODEL_DOWNLOAD_ROOT=str(models_root))))
    try:
        assert (models_root / "checkpoints" / "base.ckpt").read_bytes() == payload
        assert not (models_root / "checkpoints" / "later.ckpt").exists()
        assert "start_models" in app.cold_start
    finally:
        app.comfy.shutdown()
