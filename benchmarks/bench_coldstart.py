"""Cold start: process start until ready, for the worker and for ComfyUI alone.

  ComfyUI alone:        `main.py` started until GET /system_stats answers 200.
  worker (handler):     `python -c create_worker()` started until create_worker returns (ComfyUI booted,
                        websocket open, node catalogue read): what a job waits for.
  worker (API server):  `handler.py --rp_serve_api` started until its local API answers (adds the runpod
                        SDK's server start).

Every side is polled every 20 ms and run --runs times, alternating. Target: the worker (handler) adds at
most 0.5 s to ComfyUI alone (median difference).

Run (emulator):      python benchmarks/bench_coldstart.py
Run (real ComfyUI):  COMFYUI_DIR=/opt/comfyui COMFYUI_PYTHON=/opt/comfyui-venv/bin/python \
                         python benchmarks/bench_coldstart.py [--runs 5]
"""

from __future__ import annotations

import sys
from pathlib import Path

# Runnable as a script from anywhere: the repository root and src/ go on the import path.
sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[1] / "src")]

import argparse
import logging
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import ROOT, target_name, wait_http

from comfy_worker_dev.localserver import free_port
from tests.workerkit import real_comfyui, worker_env

log = logging.getLogger("bench_coldstart")
TARGET_ADDED_S = 0.5
TIMEOUT_S = 120.0

_BUILD_HANDLER = """
import sys, time
sys.path[:0] = [{src!r}]
from comfy_worker.app import create_worker
app = create_worker()
assert app.comfy is not None and app.comfy.boot_error is None, app.comfy and app.comfy.boot_error
sys.stdout.write("READY\\n"); sys.stdout.flush()
sys.stdin.read()  # until the benchmark closes it; atexit then stops ComfyUI
"""


def stop(proc: subprocess.Popen, sig: int = signal.SIGINT) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def comfyui_alone(tmp: Path) -> float:
    env = worker_env(tmp, real=real_comfyui() is not None)
    port = free_port()
    cmd = [env["COMFYUI_PYTHON"], "-u", str(Path(env["COMFYUI_DIR"]) / "main.py"), "--listen", "127.0.0.1",
           "--port", str(port), "--disable-auto-launch", "--input-directory", env["COMFYUI_INPUT_DIR"],
           "--output-directory", env["COMFYUI_OUTPUT_DIR"], "--temp-directory", env["COMFYUI_TEMP_DIR"],
           *env.get("COMFYUI_EXTRA_ARGS", "").split()]
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        if not wait_http(f"http://127.0.0.1:{port}/system_stats", started + TIMEOUT_S):
            raise SystemExit("ComfyUI did not answer")
        return time.monotonic() - started
    finally:
        stop(proc)


def worker_handler(tmp: Path) -> float:
    env = {**os.environ, **worker_env(tmp, real=real_comfyui() is not None, LOG_LEVEL="WARNING")}
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-c", _BUILD_HANDLER.format(src=str(ROOT / "src"))], env=env,
                            cwd=str(ROOT), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        elapsed = time.monotonic() - started
        if line.strip() != "READY":
            raise SystemExit(f"the worker did not become ready (exit code {proc.wait(30)})")
        return elapsed
    finally:
        assert proc.stdin is not None
        proc.stdin.close()  # the script returns, and its atexit hook stops ComfyUI
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            stop(proc, signal.SIGTERM)


def worker_api(tmp: Path) -> float:
    port = free_port()
    env = {**os.environ, **worker_env(tmp, real=real_comfyui() is not None, LOG_LEVEL="WARNING"),
           "PYTHONUNBUFFERED": "1"}
    env.pop("RUNPOD_WEBHOOK_GET_JOB", None)
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, str(ROOT / "handler.py"), "--rp_serve_api", "--rp_api_host",
                             "127.0.0.1", "--rp_api_port", str(port)], env=env, cwd=str(ROOT),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        if not wait_http(f"http://127.0.0.1:{port}/docs", started + TIMEOUT_S):
            raise SystemExit("the worker's local API did not answer")
        return time.monotonic() - started
    finally:
        stop(proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per side (default 5)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sides = {"ComfyUI alone": comfyui_alone, "worker (create_worker)": worker_handler,
             "worker (API server)": worker_api}
    times: dict[str, list[float]] = {name: [] for name in sides}
    for run in range(args.runs):
        for name, measure in sides.items():
            with tempfile.TemporaryDirectory(prefix="bench-coldstart-") as tmp:
                times[name].append(measure(Path(tmp)))
        log.info("run %d: %s", run + 1, ", ".join(f"{n} {v[-1]:.2f} s" for n, v in times.items()))
    medians = {name: statistics.median(values) for name, values in times.items()}
    log.info("target: %s; %d runs per side", target_name(), args.runs)
    for name, value in medians.items():
        log.info("%-24s median %.2f s  (min %.2f, max %.2f)", name, value, min(times[name]), max(times[name]))
    added = medians["worker (create_worker)"] - medians["ComfyUI alone"]
    log.info("worker adds %.2f s to ComfyUI alone (target <= %.1f s): %s; the API server adds %.2f s more",
             added, TARGET_ADDED_S, "MET" if added <= TARGET_ADDED_S else "MISSED",
             medians["worker (API server)"] - medians["worker (create_worker)"])


if __name__ == "__main__":
    main()
