"""Helpers to run the worker against the ComfyUI emulator (or a real ComfyUI) in tests."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import sys
from pathlib import Path
from typing import Any

from PIL import Image

from comfy_worker.comfy import HttpComfy, connect
from comfy_worker.job import run_job
from comfy_worker.models.cache import cache_model_paths_args
from comfy_worker_dev.localserver import free_port
from comfy_worker.settings import Settings
from comfy_worker_dev.emulator import FAULTS_ENV, make_fake_comfyui_dir

ROOT = Path(__file__).resolve().parents[1]


def png_b64(size=(32, 24), color=(10, 200, 30)) -> str:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def real_comfyui() -> tuple[Path, str] | None:
    if os.environ.get("COMFYUI_DIR"):
        return Path(os.environ["COMFYUI_DIR"]), os.environ.get("COMFYUI_PYTHON", sys.executable)
    return None


def worker_env(tmp_path: Path, *, real: bool = False, **extra: str) -> dict[str, str]:
    """Environment for a worker whose ComfyUI (emulator, or the real one) keeps its files under tmp_path."""
    env = {
        "COMFYUI_PORT": str(free_port()),
        "COMFYUI_INPUT_DIR": str(tmp_path / "input"),
        "COMFYUI_OUTPUT_DIR": str(tmp_path / "output"),
        "COMFYUI_TEMP_DIR": str(tmp_path),
        "COMFYUI_START_TIMEOUT": "60",
        "COMFY_HISTORY_POLL_INTERVAL": "1",
        "LOG_LEVEL": "DEBUG",
    }
    found = real_comfyui() if real else None
    if found:
        env["COMFYUI_DIR"], env["COMFYUI_PYTHON"] = str(found[0]), found[1]
        env["COMFYUI_EXTRA_ARGS"] = "--cpu"
    else:
        env["COMFYUI_DIR"] = str(make_fake_comfyui_dir(tmp_path / "comfyui"))
        env["COMFYUI_PYTHON"] = sys.executable
        # The emulator's faults and device travel in its own variables, which ComfyUI's allowlist leaves out.
        env["COMFYUI_ENV_PASSTHROUGH"] = "COMFY_EMULATOR_*"
    env.update(extra)
    return env


def boot_runtime(tmp_path: Path, *, faults: dict[str, Any] | None = None, real: bool = False,
                 **extra: str) -> tuple[HttpComfy, Settings]:
    env = worker_env(tmp_path, real=real, **extra)
    if faults is not None:
        os.environ[FAULTS_ENV] = json.dumps(faults)
    try:
        settings = Settings.from_env(env)
        # As the worker starts it (app.create_worker), when the test gives the model cache a folder.
        runtime = connect(settings, cache_model_paths_args(settings) if "MODEL_CACHE_DIR" in env else ())
        runtime.boot()
    finally:
        os.environ.pop(FAULTS_ENV, None)
    return runtime, settings


def run(runtime: HttpComfy, settings: Settings, job_input: Any, job_id: str = "job-1",
        progress: list | None = None) -> dict[str, Any]:
    sink = progress.append if progress is not None else (lambda p: None)
    result = asyncio.run(run_job({"id": job_id, "input": job_input}, runtime, settings, sink))
    # Cleanup runs after the result is returned; tests look at ComfyUI's folders once it is done.
    runtime.drain()
    return result


def error_of(result: dict[str, Any]) -> dict[str, Any]:
    assert "error" in result, f"expected a failure, got {json.dumps(result)[:500]}"
    return json.loads(result["error"])


def invert_workflow(image_name: str = "in.png", prefix: str = "out") -> dict[str, Any]:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": image_name}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": prefix}},
    }


def empty_image_workflow(width=64, height=48, color=0xFF0000, prefix="empty") -> dict[str, Any]:
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": width, "height": height, "batch_size": 1,
                                                      "color": color}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": prefix}},
    }


def files_under(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.exists() else []
