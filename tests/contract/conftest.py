"""`comfy_server`: the emulator always, and a real ComfyUI when COMFYUI_DIR is set (marked real_comfyui)."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from comfy_worker_build.processes import stop_process
from comfy_worker_dev.emulator import EmulatorHandle, start_emulator


@dataclass
class ComfyServer:
    url: str
    input_dir: Path
    output_dir: Path
    emulator: EmulatorHandle | None = None

    @property
    def is_real(self) -> bool:
        return self.emulator is None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_real(tmp: Path) -> tuple[subprocess.Popen[bytes], ComfyServer]:
    comfy_dir = Path(os.environ["COMFYUI_DIR"])
    python = os.environ.get("COMFYUI_PYTHON", sys.executable)
    dirs = {n: tmp / n for n in ("input", "output", "temp")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    log = open(tmp / "comfyui.log", "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen([python, str(comfy_dir / "main.py"), "--cpu", "--listen", "127.0.0.1",
                             "--port", str(port), "--disable-auto-launch", "--input-directory",
                             str(dirs["input"]), "--output-directory", str(dirs["output"]),
                             "--temp-directory", str(dirs["temp"])], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError((tmp / "comfyui.log").read_text()[-3000:])
        try:
            if requests.get(url + "/system_stats", timeout=2).status_code == 200:
                return proc, ComfyServer(url, dirs["input"], dirs["output"])
        except requests.RequestException:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("ComfyUI did not become ready")


@contextlib.contextmanager
def real_comfyui(tmp: Path) -> Iterator[ComfyServer]:
    """A real ComfyUI (COMFYUI_DIR, COMFYUI_PYTHON) on a free port with its folders in `tmp`, stopped after."""
    proc, server = _start_real(tmp)
    try:
        yield server
    finally:
        stop_process(proc)


_PARAMS = [pytest.param("emulator", id="emulator")]
if os.environ.get("COMFYUI_DIR"):
    _PARAMS.append(pytest.param("real", id="real", marks=pytest.mark.real_comfyui))


@pytest.fixture(scope="module", params=_PARAMS)
def comfy_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[ComfyServer]:
    tmp = tmp_path_factory.mktemp(f"comfy-{request.param}")
    if request.param == "emulator":
        handle = start_emulator(tmp)
        yield ComfyServer(handle.url, handle.input_dir, handle.output_dir, handle)
        handle.stop()
        return
    with real_comfyui(tmp) as server:
        yield server
    shutil.rmtree(tmp, ignore_errors=True)
