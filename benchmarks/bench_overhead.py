"""Per-job overhead of the worker as callers meet it, through the runpod SDK's local API server, against a
minimal direct ComfyUI client on the same ComfyUI.

Three paths, interleaved in a new random order every round so that drift in the machine's load hits all
alike:
  direct   the least a caller does without the worker: one websocket, POST /prompt, wait for the end,
           GET /history, read the file and base64 it (benchmarks/common.py DirectClient)
  worker   POST /runsync to `handler.py --rp_serve_api` (the worker)
  server   POST /runsync to the same SDK server running a handler that only answers with a result of the
           worker's shape and size (benchmarks/trivial_handler.py): what the SDK's server itself costs
The workflow is EmptyImage 512x512 -> ImageInvert -> SaveImage with a new color per job (so every job really
runs), its PNG returned inline. The worker's cost is its median minus the server's; target:
(worker - server) / direct <= 1.05, in both ways of having ComfyUI:
  managed   the worker starts its own ComfyUI (the image's way)
  attached  ComfyUI runs already; the worker is given COMFYUI_URL and ComfyUI's folders

    python benchmarks/bench_overhead.py [--mode managed|attached|both] [--jobs 60] [--warmup 5]
    COMFYUI_DIR=/opt/image-rehearsal/comfyui COMFYUI_PYTHON=/opt/image-rehearsal/venv/bin/python \\
        python benchmarks/bench_overhead.py
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import logging
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

from benchmarks.common import (DirectClient, color_workflow, output_matches, pixel_of_png, same_pixel,  # noqa: E402
                               target_name, wait_http)
from comfy_worker_build.processes import stop_process  # noqa: E402
from comfy_worker_dev.emulator import make_fake_comfyui_dir  # noqa: E402
from comfy_worker_dev.localserver import LocalWorkerServer, free_port  # noqa: E402

log = logging.getLogger("bench_overhead")
TARGET_RATIO = 1.05


@contextlib.contextmanager
def comfyui(folder: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    """A ComfyUI of its own (the real one of COMFYUI_DIR, else the emulator) for the attached mode."""
    comfy_dir = Path(os.environ["COMFYUI_DIR"]) if os.environ.get("COMFYUI_DIR") else make_fake_comfyui_dir(folder / "c")
    python = os.environ.get("COMFYUI_PYTHON", sys.executable)
    cmd = [python, "main.py", "--listen", "127.0.0.1", "--port", str(port), "--disable-auto-launch",
           "--input-directory", str(folder / "input"), "--output-directory", str(folder / "output"),
           "--temp-directory", str(folder)]
    if os.environ.get("COMFYUI_DIR"):
        cmd.append("--cpu")
    proc = subprocess.Popen(cmd, cwd=comfy_dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if not wait_http(f"http://127.0.0.1:{port}/system_stats", time.monotonic() + 300):
            raise SystemExit("ComfyUI did not start")
        yield proc
    finally:
        stop_process(proc)


def worker_env(folder: Path, port: int, mode: str) -> dict[str, str]:
    env = {"COMFYUI_INPUT_DIR": str(folder / "input"), "COMFYUI_OUTPUT_DIR": str(folder / "output"),
           "COMFYUI_TEMP_DIR": str(folder), "LOG_LEVEL": "WARNING", "RUNPOD_LOG_LEVEL": "ERROR",
           "UVICORN_LOG_LEVEL": "warning"}
    if mode == "attached":
        return {**env, "COMFYUI_URL": f"http://127.0.0.1:{port}"}
    env["COMFYUI_PORT"] = str(port)
    if os.environ.get("COMFYUI_DIR"):
        env.update(COMFYUI_DIR=os.environ["COMFYUI_DIR"], COMFYUI_EXTRA_ARGS="--cpu",
                   COMFYUI_PYTHON=os.environ.get("COMFYUI_PYTHON", sys.executable))
    else:
        env["COMFYUI_DIR"] = str(make_fake_comfyui_dir(folder / "c"))
    return env


def measure(mode: str, jobs: int, warmup: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp, contextlib.ExitStack() as stack:
        folder, port = Path(tmp), free_port()
        if mode == "attached":
            stack.enter_context(comfyui(folder, port))
        logs = stack.enter_context(open(folder / "servers.log", "wb"))
        worker = stack.enter_context(LocalWorkerServer(worker_env(folder, port, mode), log_file=logs))
        server = stack.enter_context(LocalWorkerServer({"TRIVIAL_RESULT_BYTES": "2000"}, log_file=logs,
                                                       handler=ROOT / "benchmarks" / "trivial_handler.py"))
        direct = DirectClient(f"http://127.0.0.1:{port}", folder / "output")
        stack.callback(direct.close)
        colors = iter(random.Random(7).sample(range(1, 0xFFFFFF), 2 * (jobs + warmup) + 10))

        # Each path returns the seconds of its call alone: checking the answer (decoding the PNG) is not timed.
        def run_worker() -> float:
            color = next(colors)
            started = time.perf_counter()
            answer = worker.runsync({"workflow": color_workflow(color, 512, "w")})
            took = time.perf_counter() - started
            if answer.get("status") != "COMPLETED" or not output_matches(answer["output"], color):
                raise SystemExit(f"the worker's job went wrong: {str(answer)[:500]}")
            return took

        def run_direct() -> float:
            color = next(colors)
            started = time.perf_counter()
            images = direct.run(color_workflow(color, 512, "d"))
            took = time.perf_counter() - started
            if len(images) != 1 or not same_pixel(pixel_of_png(base64.b64decode(images[0])), color):
                raise SystemExit("the direct client got no image, or the wrong one")
            return took

        def run_server() -> float:
            started = time.perf_counter()
            answer = server.runsync({"noop": True})
            took = time.perf_counter() - started
            if answer.get("status") != "COMPLETED":
                raise SystemExit("the trivial handler failed")
            return took

        paths: dict[str, Callable[[], float]] = {"direct": run_direct, "worker": run_worker, "server": run_server}
        times: dict[str, list[float]] = {name: [] for name in paths}
        order = list(paths)
        for round_ in range(warmup + jobs):
            random.shuffle(order)
            for name in order:
                took = paths[name]()
                if round_ >= warmup:
                    times[name].append(took)
        return {name: statistics.median(values) for name, values in times.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["managed", "attached", "both"], default="both")
    parser.add_argument("--jobs", type=int, default=60, help="measured jobs per path (default 60)")
    parser.add_argument("--warmup", type=int, default=5, help="unmeasured rounds first (default 5)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(f"target: {target_name()}; {args.jobs} jobs per path after {args.warmup} warm-up rounds")
    for mode in (["managed", "attached"] if args.mode == "both" else [args.mode]):
        m = measure(mode, args.jobs, args.warmup)
        ratio = (m["worker"] - m["server"]) / m["direct"]
        print(f"{mode:>8}: direct {m['direct'] * 1000:.1f} ms, worker {m['worker'] * 1000:.1f} ms, SDK server "
              f"alone {m['server'] * 1000:.1f} ms -> (worker - server) / direct = {ratio:.3f} "
              f"(target <= {TARGET_RATIO}: {'MET' if ratio <= TARGET_RATIO else 'MISSED'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
