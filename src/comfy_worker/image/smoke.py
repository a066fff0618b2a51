"""Build-time smoke test: fail the image build when ComfyUI, a custom node or the worker does not load.

Three checks, all without a GPU (``--cpu``):

1. ``main.py --quick-test-for-ci`` exits 0 and logs no ``IMPORT FAILED`` custom node;
2. a started ComfyUI's ``/object_info`` holds at least one node type from every custom node the
   snapshot restored (``python_module`` = ``custom_nodes.<name>``), except those allowed to add none;
3. every module of the worker package imports, and none of them imports torch.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import pkgutil
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..processes import stop_process

log = logging.getLogger(__name__)

_IMPORT_FAILED = re.compile(r"\(IMPORT FAILED\):\s*(\S.*)$|IMPORT FAILED:\s*(\S.*)$", re.MULTILINE)


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


def fetch_object_info(comfyui_dir: Path, python: str, timeout: float = 600.0) -> dict[str, Any]:
    """Start ComfyUI on a free loopback port with throw-away folders, read /object_info, stop it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="comfy-smoke-") as scratch:
        dirs = {name: Path(scratch, name) for name in ("input", "output", "temp")}
        for folder in dirs.values():
            folder.mkdir()
        process = subprocess.Popen(
            [python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port), "--disable-auto-launch",
             "--input-directory", str(dirs["input"]), "--output-directory", str(dirs["output"]),
             "--temp-directory", str(dirs["temp"])],
            cwd=comfyui_dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if process.poll() is not None:
                    raise RuntimeError(f"ComfyUI exited with {process.returncode} during start-up")
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/object_info", timeout=10) as response:
                        return json.loads(response.read())
                except OSError:
                    time.sleep(0.5)
            raise RuntimeError(f"ComfyUI did not answer within {timeout:.0f} s")
        finally:
            stop_process(process, timeout=30)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level="INFO", format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    parser = argparse.ArgumentParser(prog="python -m comfy_worker.image.smoke")
    parser.add_argument("--comfyui-dir", type=Path, required=True)
    parser.add_argument("--python", default=sys.executable, help="ComfyUI's interpreter")
    parser.add_argument("--snapshot", type=Path, help="snapshot whose nodes must show up in the catalogue")
    parser.add_argument("--allow-no-nodes", action="append", default=[],
                        help="a restored custom node that adds no node type (front-end only); repeatable")
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args(argv)

    problems = check_worker_imports()
    problems += quick_test(args.comfyui_dir, args.python, args.timeout)
    if args.snapshot is not None:
        from .snapshot import load_snapshot

        names = load_snapshot(args.snapshot).enabled_node_names()
        if names:
            object_info = fetch_object_info(args.comfyui_dir, args.python, args.timeout)
            log.info("catalogue holds %d node types", len(object_info))
            problems += [f"custom node {name} added no node type to /object_info"
                         for name in missing_node_modules(object_info, names, args.allow_no_nodes)]
    for problem in problems:
        log.error("smoke test: %s", problem)
    if problems:
        return 1
    log.info("smoke test passed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
