"""Build-time smoke test: fail the image build when ComfyUI, a custom node or the worker does not load or
cannot run a job. Everything runs without a GPU (``--cpu``), as a build has none:

1. every module of the worker package imports, and none of them imports torch;
2. ``main.py --cpu --quick-test-for-ci`` exits 0 and logs no ``IMPORT FAILED`` custom node;
3. ComfyUI, started on the CPU on a free loopback port with throw-away folders, answers
   ``/system_stats`` (the time it took is a figure) and ``/object_info``; every custom node the snapshot
   restored adds at least one node type (``python_module`` = ``custom_nodes.<name>``), except those
   allowed to add none;
4. the image's default command, ``python -u handler.py`` in the worker folder with no RunPod environment,
   runs ``test_input.json`` once in the runpod SDK's single-job mode and exits 0 (the SDK exits 1 when
   the job fails).

The figures (seconds to ready, node types, torch and Python versions, device, seconds of the default
command) are logged as one line, ``smoke figures: {...}``, which :func:`parse_figures` reads back.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import pkgutil
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .processes import stop_process

log = logging.getLogger(__name__)

_IMPORT_FAILED = re.compile(r"\(IMPORT FAILED\):\s*(\S.*)$|IMPORT FAILED:\s*(\S.*)$", re.MULTILINE)
FIGURES_MARKER = "smoke figures: "
_LOG_TAIL = 4000


def import_failures(log_text: str) -> list[str]:
    """Custom node paths ComfyUI reported as failing to import."""
    return [(a or b).strip() for a, b in _IMPORT_FAILED.findall(log_text)]


def missing_node_modules(object_info: Mapping[str, Any], node_names: Iterable[str],
                         allow_empty: Iterable[str] = ()) -> list[str]:
    """Restored custom nodes that contribute no node type to the catalogue."""
    modules = {str(info.get("python_module", "")) for info in object_info.values() if isinstance(info, dict)}
    allowed = set(allow_empty)
    return [name for name in node_names if name not in allowed and f"custom_nodes.{name}" not in modules]


def check_worker_imports(package: str = "comfy_worker") -> list[str]:
    """Import every module of the worker package; problems (including a torch import) as messages."""
    problems: list[str] = []
    root = importlib.import_module(package)
    for module in pkgutil.walk_packages(root.__path__, prefix=f"{package}."):
        if module.name.endswith("__main__"):
            continue
        try:
            importlib.import_module(module.name)
        except Exception as exc:  # noqa: BLE001 - every failure is reported, not just the first kind
            problems.append(f"{module.name}: {type(exc).__name__}: {exc}")
    if "torch" in sys.modules:
        problems.append("the worker package imported torch; only ComfyUI may")
    return problems


def quick_test(comfyui_dir: Path, python: str, timeout: float = 600.0) -> list[str]:
    result = subprocess.run([python, "main.py", "--cpu", "--quick-test-for-ci", "--disable-auto-launch"],
                            cwd=comfyui_dir, capture_output=True, text=True, timeout=timeout, check=False)
    output = result.stdout + result.stderr
    problems = [f"custom node failed to import: {path}" for path in import_failures(output)]
    if result.returncode != 0:
        problems.append(f"ComfyUI --quick-test-for-ci exited {result.returncode}: {output.strip()[-3000:]}")
    return problems


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _tail(path: Path, limit: int = _LOG_TAIL) -> str:
    try:
        return path.read_text(errors="replace")[-limit:]
    except OSError:
        return ""


@dataclass(frozen=True)
class RunningComfy:
    """What a started ComfyUI answered: how long it took to answer, and its two catalogues."""

    ready_seconds: float
    system_stats: dict[str, Any]
    object_info: dict[str, Any]


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=60) as response:
        return json.loads(response.read())


def start_comfyui(comfyui_dir: Path, python: str, timeout: float = 600.0) -> RunningComfy:
    """Start ComfyUI on the CPU on a free loopback port with throw-away folders, wait for /system_stats,
    read /system_stats and /object_info, stop it."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="comfy-smoke-") as scratch:
        dirs = {name: Path(scratch, name) for name in ("input", "output", "temp", "user")}
        for folder in dirs.values():
            folder.mkdir()
        log_path = Path(scratch, "comfyui.log")
        base = f"http://127.0.0.1:{port}"
        with open(log_path, "wb") as log_file:
            started = time.monotonic()
            process = subprocess.Popen(
                [python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
                 "--disable-auto-launch", "--input-directory", str(dirs["input"]),
                 "--output-directory", str(dirs["output"]), "--temp-directory", str(dirs["temp"]),
                 "--user-directory", str(dirs["user"]), "--database-url", "sqlite:///:memory:"],
                cwd=comfyui_dir, stdout=log_file, stderr=subprocess.STDOUT)
            try:
                deadline = started + timeout
                while True:
                    if process.poll() is not None:
                        raise RuntimeError(f"ComfyUI exited with {process.returncode} during start-up:\n"
                                           f"{_tail(log_path)}")
                    try:
                        stats = _get_json(f"{base}/system_stats")
                        break
                    except OSError:
                        if time.monotonic() > deadline:
                            raise RuntimeError(f"ComfyUI did not answer within {timeout:.0f} s:\n"
                                               f"{_tail(log_path)}") from None
                        time.sleep(0.25)
                ready = time.monotonic() - started
                return RunningComfy(ready_seconds=round(ready, 2), system_stats=stats,
                                    object_info=_get_json(f"{base}/object_info"))
            finally:
                stop_process(process, timeout=30)


def system_stats_figures(stats: Mapping[str, Any]) -> dict[str, str]:
    """torch version, Python version and device type from ComfyUI's /system_stats."""
    system = stats.get("system") or {}
    devices = stats.get("devices") or [{}]
    python = str(system.get("python_version", "")).split(" ", 1)[0]
    return {"torch": str(system.get("pytorch_version", "")), "python": python,
            "device": str(devices[0].get("type", ""))}


@dataclass(frozen=True)
class CommandResult:
    returncode: int | None  # None: killed at the timeout
    seconds: float
    output_tail: str


def default_command_env(base: Mapping[str, str], comfyui_dir: Path, python: str, scratch: Path,
                        port: int) -> dict[str, str]:
    """The environment of ``docker run IMAGE`` without RunPod: no RUNPOD_* variable (so the SDK runs
    test_input.json once), ComfyUI on the CPU on `port`, its folders under `scratch`.

    One difference: the models manifest is a file that does not exist. models.yaml's `start` entries are
    fetched when a worker starts; here that would download them during the build and leave them in the
    image, which is what `start` (rather than `build`) is chosen to avoid."""
    env = {key: value for key, value in base.items() if not key.startswith("RUNPOD_")}
    env.update({"COMFYUI_DIR": str(comfyui_dir), "COMFYUI_PYTHON": python, "COMFYUI_EXTRA_ARGS": "--cpu",
                "COMFYUI_PORT": str(port), "COMFYUI_INPUT_DIR": str(scratch / "input"),
                "COMFYUI_OUTPUT_DIR": str(scratch / "output"), "COMFYUI_TEMP_DIR": str(scratch / "temp"),
                "MODELS_MANIFEST": str(scratch / "no-start-models.yaml")})
    return env


def _stop_group(process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """End the command and anything it started in its session (its own ComfyUI included)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=timeout)
            return
        except subprocess.TimeoutExpired:
            continue


def run_default_command(worker_dir: Path, python: str, env: Mapping[str, str],
                        timeout: float = 900.0) -> CommandResult:
    """Run ``python -u handler.py`` in `worker_dir`, as the image's CMD does; its exit code and duration."""
    with tempfile.TemporaryFile() as output:
        started = time.monotonic()
        process = subprocess.Popen([python, "-u", "handler.py"], cwd=worker_dir, env=dict(env),
                                   stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            returncode: int | None = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            returncode = None
            _stop_group(process)
        seconds = round(time.monotonic() - started, 2)
        output.seek(0)
        tail = output.read().decode(errors="replace")[-_LOG_TAIL:]
    return CommandResult(returncode=returncode, seconds=seconds, output_tail=tail)


def check_default_command(worker_dir: Path, comfyui_dir: Path, python: str,
                          timeout: float = 900.0) -> tuple[CommandResult, list[str]]:
    """The default command against this ComfyUI, with its folders in a temporary folder."""
    with tempfile.TemporaryDirectory(prefix="comfy-smoke-job-") as scratch:
        env = default_command_env(os.environ, comfyui_dir, python, Path(scratch), free_port())
        result = run_default_command(worker_dir, python, env, timeout)
    command = "`python -u handler.py`"
    if result.returncode is None:
        return result, [f"{command} did not finish within {timeout:.0f} s:\n{result.output_tail}"]
    if result.returncode != 0:
        return result, [f"{command} exited {result.returncode}:\n{result.output_tail}"]
    return result, []


def format_figures(figures: Mapping[str, Any]) -> str:
    return FIGURES_MARKER + json.dumps(dict(figures), sort_keys=True)


def parse_figures(text: str) -> dict[str, Any]:
    """The figures of the last ``smoke figures: {...}`` line in a log; empty when there is none."""
    for line in reversed(text.splitlines()):
        _, marker, rest = line.partition(FIGURES_MARKER)
        if marker:
            figures = json.loads(rest)
            if isinstance(figures, dict):
                return figures
    return {}


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level="INFO", format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    parser = argparse.ArgumentParser(prog="python -m comfy_worker_build.smoke")
    parser.add_argument("--comfyui-dir", type=Path, required=True)
    parser.add_argument("--python", default=sys.executable, help="ComfyUI's interpreter (the image's one)")
    parser.add_argument("--worker-dir", type=Path,
                        help="folder of handler.py and test_input.json: run the image's default command")
    parser.add_argument("--snapshot", type=Path, help="snapshot whose nodes must show up in the catalogue")
    parser.add_argument("--allow-no-nodes", action="append", default=[],
                        help="a restored custom node that adds no node type (front-end only); repeatable")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds for each ComfyUI start")
    parser.add_argument("--job-timeout", type=float, default=900.0,
                        help="seconds for the default command (ComfyUI's start and the job)")
    args = parser.parse_args(argv)

    figures: dict[str, Any] = {}
    problems = check_worker_imports()
    problems += quick_test(args.comfyui_dir, args.python, args.timeout)
    try:
        comfy = start_comfyui(args.comfyui_dir, args.python, args.timeout)
    except RuntimeError as exc:
        problems.append(str(exc))
    else:
        figures.update(comfyui_ready_seconds=comfy.ready_seconds, node_types=len(comfy.object_info),
                       **system_stats_figures(comfy.system_stats))
        log.info("ComfyUI answered after %.1f s; catalogue holds %d node types", comfy.ready_seconds,
                 len(comfy.object_info))
        if args.snapshot is not None:
            from .snapshot import load_snapshot

            names = load_snapshot(args.snapshot).enabled_node_names()
            problems += [f"custom node {name} added no node type to /object_info"
                         for name in missing_node_modules(comfy.object_info, names, args.allow_no_nodes)]
    if args.worker_dir is not None:
        result, failed = check_default_command(args.worker_dir, args.comfyui_dir, args.python,
                                               args.job_timeout)
        figures["job_seconds"] = result.seconds
        problems += failed
    log.info("%s", format_figures(figures))
    for problem in problems:
        log.error("smoke test: %s", problem)
    if problems:
        return 1
    log.info("smoke test passed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
