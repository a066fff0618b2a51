"""Run the worker under the runpod SDK's local API server (`handler.py --rp_serve_api`) as a child process:
used by the run-a-job script, the client's local mode and the end-to-end tests."""

from __future__ import annotations

import logging
import os
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
