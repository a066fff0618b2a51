"""A ComfyUI emulator for tests: a real HTTP + websocket server started like ComfyUI's `main.py`.

Public API:
    make_fake_comfyui_dir(path) -> Path      a folder with a `main.py` that runs the emulator
    start_emulator(tmp_path, faults=None) -> EmulatorHandle
    EmulatorHandle: .url .port .base_dir .input_dir .output_dir .temp_dir .process
                    .set_faults(**fields) .get_faults() .reset() .kill() .stop() .logs()
    Faults (pydantic model), FAULTS_ENV (env var read at boot)
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import comfy_worker_dev

from ..repo import import_root
from .faults import FAULTS_ENV, Faults

__all__ = ["FAULTS_ENV", "EmulatorHandle", "Faults", "make_fake_comfyui_dir", "start_emulator"]

IMPORT_ROOT = import_root(comfy_worker_dev.__file__)
_READY_RE = re.compile(r"To see the GUI go to: http://([^:\s]+):(\d+)")

_MAIN_STUB = '''"""ComfyUI stand-in: runs the emulator of {repo}."""
import sys
from pathlib import Path

sys.path.insert(0, {repo!r})
from comfy_worker_dev.emulator.server import main  # noqa: E402

main(base_dir=Path(__file__).resolve().parent)
'''


def make_fake_comfyui_dir(path: Path) -> Path:
    """Write a `main.py` into `path` so it can be started as if it were a ComfyUI checkout."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / "main.py").write_text(_MAIN_STUB.format(repo=str(IMPORT_ROOT)), encoding="utf-8")
    (path / "models" / "checkpoints").mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class EmulatorHandle:
    process: subprocess.Popen[str]
    port: int
    base_dir: Path
    input_dir: Path
    output_dir: Path
    temp_dir: Path
    _log: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read() or b"null")

    def set_faults(self, faults: Faults | None = None, **fields: Any) -> Faults:
        """Merge the given fault fields into the running emulator's faults (a Faults replaces them)."""
        body = faults.model_dump() if faults is not None else fields
        return Faults.model_validate(self._call("POST", "/__emulator__/faults", body))

    def get_faults(self) -> Faults:
        return Faults.model_validate(self._call("GET", "/__emulator__/faults"))

    def reset(self) -> None:
        self._call("POST", "/__emulator__/reset", {})

    def logs(self) -> str:
        return "".join(self._log)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def start_emulator(tmp_path: Path, faults: Faults | dict[str, Any] | None = None,
                   extra_args: list[str] | None = None, timeout: float = 30.0) -> EmulatorHandle:
    """Start the emulator as a subprocess on a free loopback port and wait until it answers."""
    base = make_fake_comfyui_dir(Path(tmp_path) / "comfyui")
    dirs = {name: Path(tmp_path) / name for name in ("input", "output", "tempbase")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if faults is not None:
        model = faults if isinstance(faults, Faults) else Faults.model_validate(faults)
        env[FAULTS_ENV] = model.model_dump_json()
    else:
        env.pop(FAULTS_ENV, None)
    cmd = [sys.executable, "-u", str(base / "main.py"), "--listen", "127.0.0.1", "--port", "0",
           "--disable-auto-launch", "--input-directory", str(dirs["input"]),
           "--output-directory", str(dirs["output"]), "--temp-directory", str(dirs["tempbase"]),
           *(extra_args or [])]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines: list[str] = []
    ready = threading.Event()
    port_box: list[int] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            m = _READY_RE.search(line)
            if m and not port_box:
                port_box.append(int(m.group(2)))
                ready.set()
        ready.set()

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + timeout
    if not ready.wait(timeout) or not port_box:
        proc.kill()
        raise RuntimeError("emulator did not start:\n" + "".join(lines))
    handle = EmulatorHandle(proc, port_box[0], base, dirs["input"], dirs["output"],
                            dirs["tempbase"] / "temp", lines)
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(handle.url + "/system_stats", timeout=2) as resp:
                if resp.status == 200:
                    return handle
        except OSError:
            time.sleep(0.05)
    handle.kill()
    raise RuntimeError("emulator did not answer:\n" + handle.logs())
