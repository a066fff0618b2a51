"""worker-comfyui 5.8.5 compatibility: the requests its users send are accepted unchanged, and what its
clients read back is where they read it. Through the runpod SDK's local API server (`handler.py
--rp_serve_api`) with the emulator as ComfyUI, and on the in-process pipeline for forms that server refuses
before the handler sees them (an `input` sent as a string)."""

from __future__ import annotations

import asyncio
import base64
import copy
import io
import json
from pathlib import Path
from typing import Any

import pytest
import requests
from PIL import Image

from comfy_worker.comfy.fake import FakeComfy
from comfy_worker.job import run_job
from comfy_worker.settings import Settings
from comfy_worker_dev.localserver import LocalWorkerServer
from tests.captures import capture
from tests.workerkit import png_b64, worker_env

FIXTURES = Path(__file__).parent / "fixtures" / "worker_comfyui"
OPERATOR_KEY = "comfyui-operator-key-0123456789"
REQUEST_KEY = "comfyui-request-key-9876543210"


def their_test_input() -> dict[str, Any]:
    return json.loads((FIXTURES / "test_input.json").read_text())


def invert_workflow(name: str) -> dict[str, Any]:
    """The shape of worker-comfyui's README example: LoadImage of an uploaded image, then SaveImage."""
    return {"1": {"class_type": "LoadImage", "inputs": {"image": name}},
            "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
            "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "ComfyUI"}}}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("compat")
    env = worker_env(tmp, COMFY_ORG_API_KEY=OPERATOR_KEY, LOG_LEVEL="DEBUG")
    (Path(env["COMFYUI_DIR"]) / "models" / "checkpoints" / "flux1-dev-fp8.safetensors").write_bytes(b"\0")
    log_path = tmp / "worker.log"
    with open(log_path, "wb") as log_file, LocalWorkerServer(env, log_file=log_file) as worker:
        worker.log_path = log_path
        worker.comfyui_url = f"http://127.0.0.1:{env['COMFYUI_PORT']}"
        yield worker


def received_extra_data(server) -> list[dict[str, Any]]:
    """What ComfyUI got as each prompt's extra_data (the emulator records it, secrets included)."""
    return requests.get(f"{server.comfyui_url}/__emulator__/extra_data", timeout=5).json()


def read_images_as_their_clients_do(response: dict[str, Any]) -> list[tuple[str, bytes]]:
    """worker-comfyui's documented result: `output.images[]` with `filename`, `type` ("base64" or "s3_url")
    and `data`."""
    assert response["status"] == "COMPLETED", response
    out = []
    for image in response["output"]["images"]:
        assert set(image) >= {"filename", "type", "data"} and image["type"] == "base64"
        out.append((image["filename"], base64.b64decode(image["data"])))
    return out


def test_their_test_input_runs_unchanged(server):
    """Their test_input's shape (fixtures/worker_comfyui/README.md): an unused image as a data URI, the
    decoded image saved by two identical SaveImage nodes and previewed. ComfyUI runs the second SaveImage
    from the first's result and names one file for both: it comes back once (worker-comfyui lists it
    twice); the preview's temporary file not at all, as there."""
    [(filename, data)] = read_images_as_their_clients_do(server.runsync(their_test_input()["input"]))
    assert filename.startswith("ComfyUI") and filename.endswith(".png")
    with Image.open(io.BytesIO(data)) as img:
        assert img.format == "PNG"


@pytest.mark.parametrize("prefix", ["", "data:image/png;base64,"], ids=["bare-base64", "data-uri"])
def test_images_with_and_without_data_uri_prefix(server, prefix):
    body = {"workflow": invert_workflow("input_image_1.png"),
            "images": [{"name": "input_image_1.png", "image": prefix + png_b64((20, 10), (250, 0, 0))}]}
    [(_, data)] = read_images_as_their_clients_do(server.runsync(body))
    with Image.open(io.BytesIO(data)) as img:
        assert img.size == (20, 10) and img.convert("RGB").getpixel((0, 0)) == (5, 255, 255)


def test_comfy_org_api_key_reaches_comfyui_and_nothing_else(server):
    body = {**their_test_input()["input"], "comfy_org_api_key": REQUEST_KEY}
    response = server.runsync(body)
    assert response["status"] == "COMPLETED", response
    assert received_extra_data(server)[-1]["api_key_comfy_org"] == REQUEST_KEY
    assert REQUEST_KEY not in json.dumps(response)
    assert REQUEST_KEY not in server.log_path.read_text(errors="replace")


def test_operator_key_is_used_when_the_request_has_none(server):
    assert server.runsync(their_test_input()["input"])["status"] == "COMPLETED"
    assert received_extra_data(server)[-1]["api_key_comfy_org"] == OPERATOR_KEY
    assert OPERATOR_KEY not in server.log_path.read_text(errors="replace")


def test_a_failure_is_where_their_clients_look(server):
    """worker-comfyui fails a job with a top-level `error` (RunPod status FAILED); so does this worker, the
    message naming what is wrong."""
    body = their_test_input()["input"]
    del body["workflow"]
    response = server.runsync(body)
    assert response["status"] == "FAILED" and isinstance(response["error"], str) and "output" not in response
    error = json.loads(response["error"])
    assert error["code"] == "INVALID_INPUT" and error["details"]["errors"][0]["field"] == "workflow"


def test_a_workflow_error_fails_the_job(server):
    body = their_test_input()["input"]
    body["workflow"]["30"]["inputs"]["ckpt_name"] = "not-there.safetensors"
    response = server.runsync(body)
    assert response["status"] == "FAILED"
    assert "not-there.safetensors" in json.loads(response["error"])["message"]


# --- forms the SDK's local server refuses before the handler: on the pipeline -------------------------------

def run_on_fake(job_input: Any, settings: Settings | None = None, tmp: Path | None = None) -> tuple[dict, FakeComfy]:
    comfy = FakeComfy(capture("object_info.json"), root=tmp)
    result = asyncio.run(run_job({"id": "job-1", "input": job_input}, comfy, settings or Settings(), lambda p: None))
    return result, comfy


def test_input_and_workflow_as_json_strings(tmp_path):
    body = {"workflow": json.dumps(invert_workflow("a.png")), "images": [{"name": "a.png", "image": png_b64()}]}
    result, _ = run_on_fake(json.dumps(body), tmp=tmp_path)
    assert "error" not in result, result
    assert any("input was sent as a string of JSON" in w for w in result["warnings"])
    assert any("workflow was sent as a string of JSON" in w for w in result["warnings"])


def test_string_that_is_not_json_names_the_field(tmp_path):
    result, _ = run_on_fake({"workflow": "{not json"}, tmp=tmp_path)
    error = json.loads(result["error"])
    assert error["code"] == "INVALID_INPUT" and error["details"]["errors"][0]["field"] == "workflow"


def test_request_key_wins_over_the_operator_key(tmp_path):
    settings = Settings.from_env({"COMFY_ORG_API_KEY": OPERATOR_KEY})
    assert OPERATOR_KEY not in repr(settings)
    body = {"workflow": invert_workflow("a.png"), "images": [{"name": "a.png", "image": png_b64()}]}
    _, comfy = run_on_fake(copy.deepcopy(body), settings, tmp_path / "a")
    assert comfy.extra_data == [{"api_key_comfy_org": OPERATOR_KEY}]
    _, comfy = run_on_fake({**body, "comfy_org_api_key": REQUEST_KEY}, settings, tmp_path / "b")
    assert comfy.extra_data == [{"api_key_comfy_org": REQUEST_KEY}]
    _, comfy = run_on_fake(body, Settings(), tmp_path / "c")
    assert comfy.extra_data == [{}]
