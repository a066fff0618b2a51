"""The worker as RunPod's SDK runs it: the local API server (/runsync, /run + /status) and single-job mode."""

from __future__ import annotations

import base64
import io
import json
import re
import os
import shutil
import subprocess
import sys

import pytest
from PIL import Image

from comfy_run import outputs_with_data
from comfy_worker_dev.localserver import LocalWorkerServer
from tests.workerkit import ROOT as REPO_ROOT

from .workerkit import empty_image_workflow, worker_env


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sdk")
    log = open(tmp / "worker.log", "wb")
    with LocalWorkerServer(worker_env(tmp), log_file=log) as srv:
        yield srv
    log.close()


def test_runsync_with_test_input(server):
    job = json.loads((REPO_ROOT / "test_input.json").read_text())
    answer = server.runsync(job["input"])
    assert answer["status"] == "COMPLETED", answer
    [entry] = outputs_with_data(answer["output"])
    img = Image.open(io.BytesIO(base64.b64decode(entry["data"]))).convert("RGB")
    assert img.size == (128, 128)
    # test_input.json's image: blue field with a yellow square, inverted.
    assert img.getpixel((2, 2)) == (235, 215, 55)
    assert img.getpixel((64, 64)) == (5, 55, 245)


def test_run_then_status(server):
    queued = server.run({"workflow": empty_image_workflow(color=0x0000FF)})
    assert queued["status"] == "IN_PROGRESS" and queued["id"].startswith("test-")
    done = server.status(queued["id"])
    assert done["status"] == "COMPLETED"
    img = Image.open(io.BytesIO(base64.b64decode(outputs_with_data(done["output"])[0]["data"]))).convert("RGB")
    assert img.getpixel((0, 0)) == (0, 0, 255)


def test_failure_reaches_the_caller_as_structured_json_string(server):
    wf = empty_image_workflow()
    wf["2"]["class_type"] = "SaveImageThatDoesNotExist"
    answer = server.runsync({"workflow": wf})
    assert answer["status"] == "FAILED"
    assert isinstance(answer["error"], str)
    error = json.loads(answer["error"])
    assert error["code"] == "INVALID_WORKFLOW"
    assert error["details"]["problems"][0]["node_id"] == "2"
    assert error["job_id"].startswith("test-")


def test_bad_input_is_invalid_input(server):
    answer = server.runsync({"workflow": empty_image_workflow(), "imagez": []})
    error = json.loads(answer["error"])
    assert answer["status"] == "FAILED" and error["code"] == "INVALID_INPUT"
    assert error["details"]["errors"] == [{"field": "imagez", "problem": "unknown field; did you mean 'images'?",
                                           "suggestion": "images"}]


def test_single_job_mode_with_test_input(tmp_path):
    """`python handler.py` runs ./test_input.json once and exits 0 on success."""
    shutil.copy(REPO_ROOT / "test_input.json", tmp_path / "test_input.json")
    env = {**os.environ, **worker_env(tmp_path), "RUNPOD_LOG_LEVEL": "INFO"}
    env.pop("RUNPOD_WEBHOOK_GET_JOB", None)
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "handler.py")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "Job local_test completed successfully" in out
    # The result is summarised by the worker, never printed whole: no output or input data in the log.
    assert "outcome=completed" in out and ":image 128x128 " in out
    assert "Job result: <" in out
    assert not re.search(r"[A-Za-z0-9+/]{200,}", out)


def test_single_job_mode_failure_exits_nonzero(tmp_path):
    job = {"input": {"workflow": {"1": {"class_type": "Nope", "inputs": {}}}}}
    (tmp_path / "test_input.json").write_text(json.dumps(job))
    env = {**os.environ, **worker_env(tmp_path)}
    env.pop("RUNPOD_WEBHOOK_GET_JOB", None)
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "handler.py")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "INVALID_WORKFLOW" in proc.stdout + proc.stderr
