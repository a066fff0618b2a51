"""Per-job overhead of the worker against a minimal direct ComfyUI client, on the same ComfyUI.

Both run the same 512x512 EmptyImage -> ImageInvert -> SaveImage workflow (a new color per job, so every
job really executes) and return the PNG base64-encoded. Jobs alternate between the two after a warm-up, the
order inside each pair flipping, so drift in the machine's load hits both sides alike. Target: the worker's
median is at most 1.10 x the direct client's.

Run (emulator):      python benchmarks/bench_overhead.py
Run (real ComfyUI):  COMFYUI_DIR=/opt/comfyui COMFYUI_PYTHON=/opt/comfyui-venv/bin/python \
                         python benchmarks/bench_overhead.py [--jobs 30]
"""

from __future__ import annotations

import sys
from pathlib import Path

# Runnable as a script from anywhere: the repository root and src/ go on the import path.
sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[1] / "src")]

import argparse
import asyncio
import base64
import logging
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.common import (DirectClient, color_workflow, comfy_execution_seconds, output_matches, pixel_of_png, same_pixel,
                    target_name)

from comfy_worker.job import run_job
from tests.workerkit import boot_runtime, real_comfyui

log = logging.getLogger("bench_overhead")
TARGET_RATIO = 1.10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=30, help="measured jobs per side (default 30)")
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured jobs per side first (default 3)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("comfy_worker").setLevel(logging.WARNING)

    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp:
        runtime, settings = boot_runtime(Path(tmp), real=real_comfyui() is not None, LOG_LEVEL="WARNING")
        if runtime.boot_error:
            raise SystemExit(f"ComfyUI did not start: {runtime.boot_error}")
        direct = DirectClient(settings.base_url, settings.output_dir)
        loop = asyncio.new_event_loop()  # one loop for all worker jobs, as under the runpod SDK
        worker_s: list[float] = []
        direct_s: list[float] = []
        # ComfyUI's own execution time of each prompt, to tell the worker's cost from ComfyUI's variance.
        comfy_s: dict[str, list[float]] = {"worker": [], "direct": []}
        entries: list[dict] = []
        fetch_history = runtime.client.history

        def recording_history(prompt_id: str) -> dict | None:
            entry = fetch_history(prompt_id)
            if entry is not None:
                entries.append(entry)
            return entry

        runtime.client.history = recording_history  # type: ignore[method-assign]
        runtime.events.history_fetcher = recording_history
        stages: dict[str, list[float]] = {}
        color = 0x102030

        def worker_job(measure: bool) -> None:
            nonlocal color
            color += 1
            started = time.perf_counter()
            result = loop.run_until_complete(run_job(
                {"id": f"bench-{color}", "input": {"workflow": color_workflow(color)}},
                runtime, settings, lambda p: None))
            elapsed = time.perf_counter() - started
            if not output_matches(result, color):
                raise SystemExit(f"worker job failed or returned the wrong image: {str(result)[:500]}")
            if measure:
                worker_s.append(elapsed)
                seconds = comfy_execution_seconds(entries[-1])
                if seconds is not None:
                    comfy_s["worker"].append(seconds)
                for name, seconds in result["timings"].items():
                    stages.setdefault(name, []).append(seconds)
                # What run_job spends after its own total: cleanup (history delete, folder removal).
                stages.setdefault("after_total", []).append(elapsed - result["timings"]["total"])

        def direct_job(measure: bool) -> None:
            nonlocal color
            color += 1
            started = time.perf_counter()
            images = direct.run(color_workflow(color, prefix="direct"))
            elapsed = time.perf_counter() - started
            if len(images) != 1 or not same_pixel(pixel_of_png(base64.b64decode(images[0])), color):
                raise SystemExit("direct job returned the wrong image")
            if measure:
                direct_s.append(elapsed)
                seconds = comfy_execution_seconds(direct.last_entry)
                if seconds is not None:
                    comfy_s["direct"].append(seconds)

        try:
            for _ in range(args.warmup):
                worker_job(False)
                direct_job(False)
            for i in range(args.jobs):
                pair = (worker_job, direct_job) if i % 2 == 0 else (direct_job, worker_job)
                for job in pair:
                    job(True)
        finally:
            direct.close()
            loop.close()
            runtime.shutdown()

    w, d = statistics.median(worker_s), statistics.median(direct_s)
    log.info("target: %s; %d jobs per side after %d warm-up; 512x512 PNG delivered inline",
             target_name(), args.jobs, args.warmup)
    log.info("direct client: median %.1f ms  (min %.1f, max %.1f)", d * 1000, min(direct_s) * 1000,
             max(direct_s) * 1000)
    log.info("worker:        median %.1f ms  (min %.1f, max %.1f)", w * 1000, min(worker_s) * 1000,
             max(worker_s) * 1000)
    for side, values in comfy_s.items():
        if values:
            log.info("ComfyUI's own execution time of the %s's prompts: median %.1f ms", side,
                     statistics.median(values) * 1000)
    log.info("worker stages, median ms: %s", ", ".join(
        f"{name}={statistics.median(values) * 1000:.1f}" for name, values in stages.items()))
    log.info("ratio worker/direct = %.3f (target <= %.2f): %s", w / d, TARGET_RATIO,
             "MET" if w / d <= TARGET_RATIO else "MISSED")


if __name__ == "__main__":
    main()
