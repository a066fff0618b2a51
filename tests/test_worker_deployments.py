"""Deployed workflows through the worker: a parameter of every type seen in the outputs of the emulator (and of a
real ComfyUI with COMFYUI_DIR); the start-up check, the catalogue, the deployed-only rule and the client through
the runpod SDK's local API server."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from PIL import Image

from comfy_run import outputs_with_data
from comfy_worker.deployments import load_deployments, read_folder
from comfy_worker.job import run_job
from comfy_worker_dev.localserver import LocalWorkerServer

from .test_deployments import EVERY_TYPE, PNG, wav_b64
from .workerkit import boot_runtime, empty_image_workflow, real_comfyui, worker_env

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ["emulator"] + (["real"] if real_comfyui() else [])

VIDEO = {"1": {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 32, "batch_size": 4, "color": 0x3366FF}},
         "2": {"class_type": "CreateVideo", "inputs": {"images": ["1", 0], "fps": 4.0}},
         "3": {"class_type": "SaveVideo", "inputs": {"video": ["2", 0], "filename_prefix": "video/made",
                                                      "format": "auto", "format.codec": "auto"}}}


def _run(runtime, settings, deployments, job_input: dict[str, Any]) -> dict[str, Any]:
    result = asyncio.run(run_job({"id": "job-1", "input": job_input}, runtime, settings, lambda p: None, deployments=deployments))
    runtime.drain()
    return result


@pytest.mark.parametrize("target", TARGETS)
def test_every_parameter_type_shows_in_the_outputs(tmp_path, target, request):
    if target == "real":
        request.applymarker(pytest.mark.real_comfyui)
    runtime, settings = boot_runtime(tmp_path, real=target == "real", CLEANUP="false",
                                     DEPLOYED_WORKFLOWS_DIR=str(EVERY_TYPE),
                                     DEPLOYED_WORKFLOWS_VOLUME_DIR=str(tmp_path / "none"))
    try:
        deployments = load_deployments(settings, runtime)
        assert list(deployments.ready) == ["every_type"], {k: e.message for k, e in deployments.unavailable.items()}
        made = _run(runtime, settings, deployments, {"workflow": VIDEO})
        [video] = outputs_with_data(made)
        mask = Image.new("RGB", (24, 20), (200, 0, 0))
        buf = io.BytesIO()
        mask.save(buf, "PNG")
        params = {"picture": PNG, "width": 40, "height": 24, "method": "bilinear", "zoom": 0.5,
                  "caption": "a red square", "flag": True, "mask": base64.b64encode(buf.getvalue()).decode(),
                  "sound": wav_b64(0.5), "clip": f"data:video/mp4;base64,{video['data']}"}
        result = _run(runtime, settings, deployments, {"workflow_id": "every_type", "params": params})
        assert "error" not in result, result
        by_node = {o["node_id"]: o for o in outputs_with_data(result)}
        assert (by_node["4"]["width"], by_node["4"]["height"]) == (20, 12)  # width, height, then zoom
        assert by_node["6"]["text"] == "a red square" and by_node["8"]["text"] == "True"
        assert (by_node["11"]["width"], by_node["11"]["height"]) == (24, 20)
        with Image.open(io.BytesIO(base64.b64decode(by_node["11"]["data"]))) as img:
            assert abs(img.convert("L").getpixel((3, 3)) - 200) <= 1  # the mask is the picture's red channel
        assert by_node["13"]["kind"] == "audio" and abs(by_node["13"]["duration"] - 0.5) < 0.05
        assert by_node["15"]["kind"] == "video" and by_node["15"]["mime_type"].startswith("video/")
        assert result["workflow_id"] == "every_type"
        graph = runtime.client.history(result["prompt_id"])["prompt"][2]  # what ComfyUI was given
        assert graph["2"]["inputs"]["upscale_method"] == "bilinear" and graph["3"]["inputs"]["scale_by"] == 0.5
        assert graph["5"]["inputs"]["value"] == "a red square" and graph["7"]["inputs"]["value"] is True
        assert all(graph[n]["inputs"][i].startswith("worker-jobs/") for n, i in
                   (("1", "image"), ("9", "image"), ("12", "audio"), ("14", "file")))
    finally:
        runtime.shutdown()


# --- through the runpod SDK's local API server ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A worker (emulator) whose deployment folder holds the repository's example and a broken workflow, and
    which runs deployed workflows only."""
    tmp = tmp_path_factory.mktemp("deployed-server")
    folder = tmp / "workflows"
    shutil.copytree(ROOT / "workflows", folder)
    (folder / "broken.json").write_text(json.dumps({"1": {"class_type": "FancyUpscaler", "inputs": {}}}))
    (folder / "broken.yaml").write_text("description: needs a node this worker lacks\n")
    env = worker_env(tmp, LOG_LEVEL="INFO", DEPLOYED_WORKFLOWS_DIR=str(folder), DEPLOYED_WORKFLOWS_ONLY="true")
    log_path = tmp / "worker.log"
    with open(log_path, "wb") as log_file, LocalWorkerServer(env, log_file=log_file) as worker:
        worker.log_path = log_path  # type: ignore[attr-defined]
        worker.folder = folder  # type: ignore[attr-defined]
        yield worker


def test_the_catalogue_serves_the_schema_the_manifest_makes(server):
    answer = server.runsync({"list_workflows": True})
    assert answer["status"] == "COMPLETED", answer
    catalogue = answer["output"]
    jsonschema.validate(catalogue, json.loads((ROOT / "docs/schema/workflow-catalogue.schema.json").read_text()))
    [invert] = catalogue["workflows"]
    [source] = [s for s in read_folder(ROOT / "workflows") if s.id == "invert"]
    from comfy_worker.deployments import params_schema
    assert invert["params_schema"] == params_schema("invert", source.manifest, source.version)
    assert invert["version"] == source.version and invert["description"] == source.manifest.description
    assert list(invert["params_schema"]["properties"]) == list(source.manifest.params)
    assert catalogue["deployed_only"] is True
    [broken] = catalogue["unavailable"]
    assert broken["id"] == "broken" and broken["code"] == "INVALID_WORKFLOW" and "FancyUpscaler" in broken["reason"]


def test_a_broken_deployment_is_reported_at_start_and_refused(server):
    log = server.log_path.read_text(errors="replace")
    assert "deployed workflow 'broken' is unavailable" in log and "FancyUpscaler" in log
    assert "deployed workflows: 1 ready (invert@" in log
    answer = server.runsync({"workflow_id": "broken"})
    error = json.loads(answer["error"])
    assert answer["status"] == "FAILED" and error["code"] == "INVALID_WORKFLOW"
    assert error["message"].startswith("the deployed workflow 'broken' is unavailable on this worker")


def test_a_named_request_runs_and_a_raw_graph_is_refused(server):
    answer = server.runsync({"workflow_id": "invert", "params": {"width": 48, "height": 32}})
    assert answer["status"] == "COMPLETED", answer
    [entry] = outputs_with_data(answer["output"])
    assert (entry["width"], entry["height"]) == (48, 32) and answer["output"]["workflow_id"] == "invert"
    refused = server.runsync({"workflow": empty_image_workflow()})
    error = json.loads(refused["error"])
    assert refused["status"] == "FAILED" and error["code"] == "POLICY_VIOLATION"
    assert "DEPLOYED_WORKFLOWS_ONLY" in error["message"]


def _client(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "comfy_run", *args], capture_output=True, text=True, timeout=120,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}"})


def test_the_client_runs_and_lists_deployed_workflows(server, tmp_path):
    image = tmp_path / "cat.png"
    Image.new("RGB", (20, 10), (10, 20, 30)).save(image)
    done = _client("invert", "--local", server.url, "--param", "width=64", "--param", f"image={image}",
                   "--param", "method=bilinear", "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    [saved] = (tmp_path / "out").iterdir()
    with Image.open(saved) as img:
        assert img.size == (64, 128) and img.getpixel((2, 2))[:3] == (245, 235, 225)
    listed = _client("--list", "--local", server.url)
    assert listed.returncode == 0, listed.stderr
    assert "invert  (version " in listed.stdout and "--param width=<integer> [16..2048; default 128]" in listed.stdout
    assert "broken  UNAVAILABLE (INVALID_WORKFLOW)" in listed.stdout
    wrong = _client("invert", "--local", server.url, "--param", "widht=64")
    assert wrong.returncode == 1 and "params.widht" in wrong.stderr and "did you mean 'width'" in wrong.stderr
