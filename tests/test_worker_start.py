"""Start-up: a worker that cannot get ComfyUI ready within its start budget, on the device this host has,
is unfit and takes no job; ComfyUI that dies for good later ends the worker."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from comfy_worker.app import create_worker
from comfy_worker_dev.localserver import LocalWorkerServer
from comfy_worker.settings import Settings
from comfy_worker_dev.emulator import FAULTS_ENV
from comfy_worker_dev.emulator.server import DEVICE_ENV

from .workerkit import empty_image_workflow, worker_env


def fake_nvidia_smi(folder: Path, gpus: int = 1) -> str:
    """A PATH holding an nvidia-smi that lists `gpus` GPUs, as the driver's tool does."""
    folder.mkdir(parents=True, exist_ok=True)
    tool = folder / "nvidia-smi"
    lines = "\\n".join(f"GPU {i}: NVIDIA H200 (UUID: GPU-{i:08d})" for i in range(gpus))
    tool.write_text(f"#!/bin/sh\nprintf '{lines}\\n'\n")
    tool.chmod(0o755)
    return f"{folder}:{os.environ['PATH']}"


@pytest.fixture
def env_faults():
    def set_faults(**faults: object) -> None:
        os.environ[FAULTS_ENV] = json.dumps(faults)

    yield set_faults
    os.environ.pop(FAULTS_ENV, None)


def test_a_comfyui_that_exits_at_start_makes_the_worker_unfit_with_its_exit_code(tmp_path, env_faults):
    env_faults(exit_at_start=3)
    started = time.monotonic()
    app = create_worker(Settings.from_env(worker_env(tmp_path)))
    try:
        assert app.unfit is not None
        assert "exited with code 3" in app.unfit
        assert "Emulated start-up failure" in app.unfit  # ComfyUI's own last log line says why
        assert time.monotonic() - started < 30
        with pytest.raises(RuntimeError, match="exited with code 3"):
            app.check_fitness()
    finally:
        app.comfy.shutdown()


def test_the_start_budget_bounds_a_slow_boot(tmp_path, env_faults):
    env_faults(start_delay=20)
    started = time.monotonic()
    app = create_worker(Settings.from_env(worker_env(tmp_path, START_TIMEOUT="3")))
    try:
        assert time.monotonic() - started < 10
        assert app.unfit is not None and "did not answer within" in app.unfit
    finally:
        app.comfy.shutdown()


def test_start_budget_follows_runpods_init_timeout():
    assert Settings().start_budget == 400
    assert Settings(runpod_init_timeout=600).start_budget == 580
    assert Settings(runpod_init_timeout=600, start_timeout=90).start_budget == 90


def test_a_gpu_host_whose_comfyui_runs_on_the_cpu_is_unfit(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", fake_nvidia_smi(tmp_path / "bin"))
    monkeypatch.setenv("RUNPOD_WEBHOOK_GET_JOB", "http://127.0.0.1:9/job-take/$ID?x=1")  # production: no fallback
    app = create_worker(Settings.from_env(worker_env(tmp_path)))
    try:
        assert app.unfit is not None and "1 NVIDIA GPU(s) but ComfyUI runs on cpu" in app.unfit
    finally:
        app.comfy.shutdown()


def test_a_gpu_host_whose_comfyui_runs_on_cuda_is_fit(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", fake_nvidia_smi(tmp_path / "bin"))
    monkeypatch.setenv(DEVICE_ENV, "cuda")
    app = create_worker(Settings.from_env(worker_env(tmp_path)))
    try:
        assert app.unfit is None, app.unfit
        app.check_fitness()
    finally:
        app.comfy.shutdown()


def test_local_mode_without_a_gpu_runs_comfyui_on_the_cpu(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # no nvidia-smi
    monkeypatch.delenv("RUNPOD_WEBHOOK_GET_JOB", raising=False)
    app = create_worker(Settings.from_env(worker_env(tmp_path, COMFYUI_EXTRA_ARGS="")))
    try:
        assert app.unfit is None
        assert "--cpu" in app.comfy.settings.comfyui_extra_args
        argv = app.comfy.client.system_stats()["system"]["argv"]
        assert "--cpu" in argv
    finally:
        app.comfy.shutdown()


def test_the_sdk_checks_are_off_in_the_worker_process(tmp_path, monkeypatch):
    monkeypatch.delenv("RUNPOD_SKIP_AUTO_SYSTEM_CHECKS", raising=False)
    monkeypatch.delenv("RUNPOD_SKIP_GPU_CHECK", raising=False)
    app = create_worker(Settings.from_env(worker_env(tmp_path)), boot=False)
    assert os.environ["RUNPOD_SKIP_AUTO_SYSTEM_CHECKS"] == "true"
    assert os.environ["RUNPOD_SKIP_GPU_CHECK"] == "true"
    app.comfy.shutdown()


def test_comfyui_lost_for_good_during_a_job_ends_the_worker_after_that_job(tmp_path):
    app = create_worker(Settings.from_env(worker_env(tmp_path, COMFYUI_RESTART="false")))
    try:
        assert app.unfit is None
        app.comfy.client._request("POST", "/__emulator__/faults", json={"crash_on_node": "EmptyImage"})
        import asyncio

        result = asyncio.run(app.handler({"id": "crash", "input": {"workflow": empty_image_workflow()}}))
        assert json.loads(result["error"])["code"] == "COMFYUI_UNAVAILABLE"
        assert app.ending is not None and "COMFYUI_RESTART is off" in app.ending
        assert app.config["refresh_worker"] is True  # the SDK posts this result with stopPod, then stops
    finally:
        app.comfy.shutdown()


def test_the_local_server_of_an_unfit_worker_exits_at_once_saying_why(tmp_path):
    env = worker_env(tmp_path)
    env[FAULTS_ENV] = json.dumps({"exit_at_start": 7})
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log_file:
        server = LocalWorkerServer(env, log_file=log_file)
        started = time.monotonic()
        with pytest.raises(RuntimeError, match="exited with code 1"):
            server.start(timeout=60)
    assert time.monotonic() - started < 45
    text = log_path.read_text()
    assert "the worker cannot run jobs and ends: ComfyUI is not ready: ComfyUI exited with code 7" in text
    assert "ComfyUI's last" in text and "Emulated start-up failure" in text
