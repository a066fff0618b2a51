"""Run the worker as the image does (`python -u handler.py` in the repository root) against the RunPod
job API emulator, with the variables RunPod sets, the worker managing its own ComfyUI: the test suite's
ComfyUI emulator by default, a real ComfyUI when COMFYUI_DIR (and COMFYUI_PYTHON) are set and `real=True`.

The worker's stdout and stderr go to one log file; the process runs in its own process group, which is
always killed on teardown together with anything it started (ComfyUI, the SDK's heartbeat process).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from typing_extensions import Self

from tests.workerkit import worker_env

from .server import RunPodPlatform

log = logging.getLogger("tests.platform.harness")

REPO_ROOT = Path(__file__).resolve().parents[2]

# What the SDK's automatic fitness checks need switched off on a test machine: the system checks open a TCP
# connection to 8.8.8.8:53 (offline: os._exit(1)) and, where nvidia-smi answers, import torch and run a
# CUDA matmul; the GPU check runs the SDK's gpu_test binary. The worker is meant to turn them off itself.
SDK_CHECKS_OFF = {"RUNPOD_SKIP_AUTO_SYSTEM_CHECKS": "true", "RUNPOD_SKIP_GPU_CHECK": "true"}

FAKE_NVIDIA_SMI = """#!/bin/sh
# Stands in for nvidia-smi: the runpod SDK decides "this host has a GPU" from its output, the worker from
# the GPUs `nvidia-smi -L` lists.
if [ "$1" = "-L" ] || [ "$1" = "--list-gpus" ]; then
    echo "GPU 0: NVIDIA H200 (UUID: GPU-00000000-0000-0000-0000-000000000000)"
    exit 0
fi
echo "NVIDIA-SMI 580.00  Driver Version: 580.00  CUDA Version: 13.0"
"""

# A `torch` package that records who imports it (pid and command line) and then refuses to load, so any
# import by the worker process shows in the log file named by $TORCH_IMPORT_LOG.
RECORDING_TORCH = """import os, sys
with open(os.environ["TORCH_IMPORT_LOG"], "a") as log:
    log.write(f"{os.getpid()} {' '.join(sys.argv)}\\n")
raise ImportError("this torch only records that it was imported")
"""


def recording_torch(folder: Path) -> Path:
    """A folder holding the recording `torch`; put it first on PYTHONPATH."""
    package = folder / "torch"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text(RECORDING_TORCH)
    return folder


def fake_nvidia_smi(folder: Path) -> Path:
    """A folder holding an `nvidia-smi` that claims a GPU; put it first on PATH."""
    folder.mkdir(parents=True, exist_ok=True)
    exe = folder / "nvidia-smi"
    exe.write_text(FAKE_NVIDIA_SMI)
    exe.chmod(0o755)
    return folder


class WorkerProcess:
    """`python -u handler.py` in production mode against `platform`.

    env: extra variables for this worker (they win over the defaults, e.g. MAX_CONCURRENCY=2).
    sdk_checks_off_in_env: put RUNPOD_SKIP_AUTO_SYSTEM_CHECKS / RUNPOD_SKIP_GPU_CHECK in the environment;
        False shows what the worker does on its own.
    ping_interval_ms: RUNPOD_PING_INTERVAL. The SDK turns it into whole seconds (`// 1000`) and uses twice
        that as the ping's HTTP timeout, so anything under 1000 makes the heartbeat spin and fail.
    """

    def __init__(self, platform: RunPodPlatform, workdir: Path, *, env: Mapping[str, str] | None = None,
                 real: bool = False, pod_id: str = "worker-1", ping_interval_ms: int = 1000,
                 sdk_checks_off_in_env: bool = True, python: str = sys.executable) -> None:
        if ping_interval_ms < 1000:
            raise ValueError("RUNPOD_PING_INTERVAL under 1000 ms becomes 0 s in the SDK")
        self.platform = platform
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.pod_id = pod_id
        self.log_path = self.workdir / "worker.log"
        self.python = python
        home = self.workdir / "home"
        home.mkdir(exist_ok=True)
        self.env: dict[str, str] = {
            **os.environ,
            **worker_env(self.workdir, real=real),
            # As in the image (Dockerfile ENV); the SDK's own level (RUNPOD_LOG_LEVEL) is left at its default.
            "LOG_LEVEL": "INFO",
            **platform.webhook_env(),
            "RUNPOD_POD_ID": pod_id,
            "RUNPOD_POD_HOSTNAME": f"{pod_id}-host",
            "RUNPOD_PING_INTERVAL": str(ping_interval_ms),
            # The SDK prefers ~/.runpod/config.toml's api_key over RUNPOD_AI_API_KEY for job calls: a test
            # HOME keeps a developer's credentials out.
            "HOME": str(home),
            "PYTHONUNBUFFERED": "1",
        }
        if platform.api_key is not None:
            self.env["RUNPOD_AI_API_KEY"] = platform.api_key
        for name in ("RUNPOD_LOG_LEVEL", "RUNPOD_DEBUG_LEVEL", "RUNPOD_REALTIME_PORT", "COMFYUI_URL",
                     *SDK_CHECKS_OFF):
            self.env.pop(name, None)  # from the developer's shell: they would change the mode or the checks
        if sdk_checks_off_in_env:
            self.env.update(SDK_CHECKS_OFF)
        self.env.update(env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_file: Any = None
        self._family: list[tuple[int, int]] = []  # (pid, start time) of what it had started when told to end
        self._terminated = False

    # ------------------------------------------------------------------ process

    def start(self) -> WorkerProcess:
        # Open for the life of the process (closed in stop()), so a test can read it while the worker runs.
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen([self.python, "-u", "handler.py"], cwd=str(REPO_ROOT), env=self.env,
                                     stdin=subprocess.DEVNULL, stdout=self._log_file, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        log.info("worker %s started (pid %d), log %s", self.pod_id, self.proc.pid, self.log_path)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None, "start() the worker first"
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def descendants(self) -> list[int]:
        """The pids of every live process the worker started (ComfyUI, the SDK's heartbeat process, ...)."""
        return [pid for pid, _ in _descendants(self.pid)]

    def wait_exit(self, timeout: float) -> int | None:
        """The exit code, or None if it is still running after `timeout` seconds."""
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def wait_polling(self, timeout: float = 60.0) -> None:
        """Wait until the worker's loop asks for a job (ComfyUI is up and the SDK runs), or fail with its log."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(c.worker_id == self.pod_id for c in self.platform.calls("job-take")
                   + self.platform.calls("job-take-batch")):
                return
            if not self.alive():
                raise RuntimeError(f"the worker exited with code {self.returncode}:\n{self.log_tail()}")
            time.sleep(0.05)
        raise TimeoutError(f"the worker took no job within {timeout} s:\n{self.log_tail()}")

    def terminate(self) -> None:
        """Send SIGTERM (the SDK stops taking jobs, drains and exits) without waiting: stopping several workers
        at once then takes as long as the slowest."""
        proc = self.proc
        if proc is not None and proc.poll() is None and not self._terminated:
            self._family = _descendants(proc.pid)
            self._terminated = True
            _signal_group(proc.pid, signal.SIGTERM)

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM (unless terminate() sent it), then SIGKILL the whole group and whatever it started."""
        proc = self.proc
        if proc is not None:
            self.terminate()
            family = {**dict(self._family), **dict(_descendants(proc.pid))}
            if proc.poll() is None:
                try:
                    proc.wait(grace)
                except subprocess.TimeoutExpired:
                    log.warning("worker %s ignored SIGTERM for %.0f s; killing it", self.pod_id, grace)
            _signal_group(proc.pid, signal.SIGKILL)
            # ComfyUI runs in a session of its own: kill what the worker had started, by pid, if that pid is
            # still the same process (same start time), never one that reused the number.
            for pid, started in family.items():
                if _start_time(pid) == started:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            if proc.poll() is None:
                proc.wait(5)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ what it said, and its ComfyUI

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_text()[-chars:]

    @property
    def comfyui_url(self) -> str:
        return f"http://127.0.0.1:{self.env['COMFYUI_PORT']}"

    def comfyui(self, method: str, path: str, body: Any = None, timeout: float = 10.0) -> Any:
        """A call to the worker's ComfyUI (e.g. GET /queue, or the emulator's POST /__emulator__/faults)."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.comfyui_url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read() or b"null")

    def set_emulator_faults(self, **fields: Any) -> Any:
        """Inject faults into the ComfyUI emulator this worker runs (node_delay, error_on_node, ...)."""
        return self.comfyui("POST", "/__emulator__/faults", fields)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


def _stat_fields(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/<pid>/stat (the command name, field 2, may hold spaces and parentheses)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()


def _start_time(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None  # field 22: start time, in clock ticks since boot


def _descendants(pid: int) -> list[tuple[int, int]]:
    """(pid, start time) of every live process below `pid` (Linux /proc)."""
    children: dict[int, list[tuple[int, int]]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields:
            children.setdefault(int(fields[1]), []).append((int(entry.name), int(fields[19])))
    found: list[tuple[int, int]] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child[0])
    return found
