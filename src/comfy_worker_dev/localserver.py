"""Run the worker under the runpod SDK's local API server (`handler.py --rp_serve_api`) as a child process:
used by the run-a-job script, the client's local mode and the end-to-end tests."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import requests

from .repo import repo_root

log = logging.getLogger("comfy_worker_dev.localserver")



def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def comfyui_env(workdir: Path) -> tuple[dict[str, str], str]:
    """Environment for a worker run by hand, and what its ComfyUI is: the running one at COMFYUI_URL, the
    checkout at COMFYUI_DIR (on the CPU without nvidia-smi), else the emulator. Its files go under workdir."""
    env: dict[str, str] = {}
    if os.environ.get("COMFYUI_URL"):
        return env, f"ComfyUI at {os.environ['COMFYUI_URL']}"
    if os.environ.get("COMFYUI_DIR"):
        if "COMFYUI_EXTRA_ARGS" not in os.environ and not shutil.which("nvidia-smi"):
            env["COMFYUI_EXTRA_ARGS"] = "--cpu"
        label = f"ComfyUI from {os.environ['COMFYUI_DIR']}"
    else:
        from .emulator import make_fake_comfyui_dir

        env["COMFYUI_DIR"] = str(make_fake_comfyui_dir(workdir / "comfyui"))
        env["COMFYUI_PYTHON"] = sys.executable
        label = "the ComfyUI emulator (set COMFYUI_DIR to use a real ComfyUI)"
    env.setdefault("COMFYUI_PORT", str(free_port()))
    # Keep the run's files out of the ComfyUI checkout.
    for name, sub in (("COMFYUI_INPUT_DIR", "input"), ("COMFYUI_OUTPUT_DIR", "output"), ("COMFYUI_TEMP_DIR", "")):
        env.setdefault(name, os.environ.get(name) or str(workdir / sub))
    return env, label


class LocalWorkerServer:
    """`python handler.py --rp_serve_api` on a free loopback port, stopped on exit."""

    def __init__(self, env: Mapping[str, str], *, port: int | None = None, log_file: IO[bytes] | None = None,
                 python: str = sys.executable, handler: Path | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        self._env.pop("RUNPOD_WEBHOOK_GET_JOB", None)
        self._root = handler.parent if handler is not None else repo_root()
        handler = handler or self._root / "handler.py"
        self._cmd = [python, str(handler), "--rp_serve_api", "--rp_api_host", "127.0.0.1",
                     "--rp_api_port", str(self.port)]
        self._log_file = log_file
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 300.0) -> LocalWorkerServer:
        self.proc = subprocess.Popen(self._cmd, cwd=str(self._root), env=self._env, stdin=subprocess.DEVNULL,
                                     stdout=self._log_file or subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the worker exited with code {self.proc.returncode} before it was ready")
            try:
                requests.get(f"{self.url}/docs", timeout=1)
                return self
            except requests.RequestException:
                time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"the worker did not answer within {timeout:.0f} s")

    def runsync(self, job_input: dict[str, Any], timeout: float = 600.0) -> dict[str, Any]:
        resp = requests.post(f"{self.url}/runsync", json={"input": job_input}, timeout=timeout)
        resp.raise_for_status()
        return resp.json()

    def run(self, job_input: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
        resp = requests.post(f"{self.url}/run", json={"input": job_input}, timeout=timeout)
        resp.raise_for_status()
        return resp.json()

    def status(self, job_id: str, timeout: float = 600.0) -> dict[str, Any]:
        resp = requests.post(f"{self.url}/status/{job_id}", timeout=timeout)
        resp.raise_for_status()
        return resp.json()

    def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def __enter__(self) -> LocalWorkerServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
