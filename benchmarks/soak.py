"""Soak: hundreds of jobs through one worker runtime, checking that nothing accumulates.

Jobs cycle through four shapes: a generated image, an uploaded input image with a temporary preview, an
invalid workflow (refused before submission), and a run that returns its temporary preview too. After a
warm-up, the worker process's resident memory (VmRSS), open file descriptors and threads are read from
/proc, and again at the end; ComfyUI's input, output and temp folders and its history must be empty.

Run: python benchmarks/soak.py [--jobs 300]   (against the emulator; COMFYUI_DIR runs a real ComfyUI)
"""

from __future__ import annotations

import sys
from pathlib import Path

# Runnable as a script from anywhere: the repository root and src/ go on the import path.
sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[1] / "src")]

import argparse
import asyncio
import base64
import gc
import io
import json
import logging
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from benchmarks.common import color_workflow, output_matches, pixel_of_png, proc_stats, target_name
from comfy_run import outputs_with_data
from comfy_worker.job import run_job
from tests.workerkit import boot_runtime, real_comfyui

log = logging.getLogger("soak")


@dataclass
class SoakReport:
    jobs: int
    wrong: list[str] = field(default_factory=list)  # jobs whose result was not the expected one
    start: dict[str, int] = field(default_factory=dict)
    end: dict[str, int] = field(default_factory=dict)
    files_left: dict[str, list[str]] = field(default_factory=dict)
    history_left: int = 0
    queue_left: int = 0
    seconds: float = 0.0

    def lines(self) -> list[str]:
        return [
            f"target: {target_name()}; {self.jobs} jobs in {self.seconds:.1f} s "
            f"({self.jobs / self.seconds:.1f} jobs/s); wrong results: {len(self.wrong)}",
            "files left: " + ", ".join(f"{k}={len(v)}" for k, v in self.files_left.items())
            + f"; history entries left: {self.history_left}; queue items left: {self.queue_left}",
            f"worker RSS: {self.start['rss_kb'] / 1024:.1f} MB -> {self.end['rss_kb'] / 1024:.1f} MB "
            f"({(self.end['rss_kb'] - self.start['rss_kb']) / 1024:+.1f} MB)",
            f"open fds: {self.start['fds']} -> {self.end['fds']} ({self.end['fds'] - self.start['fds']:+d}); "
            f"threads: {self.start['threads']} -> {self.end['threads']}",
        ]


def _png_b64(rgb: tuple[int, int, int], size: int = 64) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), rgb).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def job_for(index: int) -> tuple[dict[str, Any], Any]:
    """The job input for soak job `index` and a check of its result (True when right)."""
    color = 0x010203 + index * 0x0F0B07 & 0xFFFFFF
    kind = index % 4
    if kind == 0:
        return {"workflow": color_workflow(color, size=128)}, lambda r: output_matches(r, color)
    if kind == 1:
        rgb = ((color >> 16) & 0xFF, (color >> 8) & 0xFF, color & 0xFF)
        workflow = {
            "1": {"class_type": "LoadImage", "inputs": {"image": "in.png"}},
            "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
            "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "soak"}},
            "4": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
        }
        return ({"workflow": workflow, "images": [{"name": "in.png", "image": _png_b64(rgb)}]},
                lambda r: output_matches(r, color))
    if kind == 2:
        workflow = {"1": {"class_type": "NoSuchNode", "inputs": {}}}
        return {"workflow": workflow}, lambda r: json.loads(r.get("error", "{}")).get("code") == "INVALID_WORKFLOW"
    workflow = color_workflow(color, size=64)
    workflow["4"] = {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}

    def two_outputs(result: dict[str, Any]) -> bool:
        outputs = outputs_with_data(result)
        temp = [o for o in outputs if o.get("type") == "temp"]
        saved = [o for o in outputs if o.get("type") == "output"]
        return (len(temp) == 1 and len(saved) == 1 and output_matches({"outputs": saved}, color)
                and pixel_of_png(base64.b64decode(temp[0]["data"])) != pixel_of_png(base64.b64decode(saved[0]["data"])))

    return {"workflow": workflow, "output_config": {"include_temp": True}}, two_outputs


def _stats() -> dict[str, int]:
    gc.collect()
    return {**proc_stats(), "threads": threading.active_count()}


def _files(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()) if path.exists() else []


def soak(tmp: Path, jobs: int = 300, warmup: int = 30) -> SoakReport:
    runtime, settings = boot_runtime(tmp, real=real_comfyui() is not None, LOG_LEVEL="WARNING")
    if runtime.boot_error:
        raise RuntimeError(f"ComfyUI did not start: {runtime.boot_error}")
    loop = asyncio.new_event_loop()  # one loop for every job, as under the runpod SDK
    report = SoakReport(jobs=jobs)

    def one(index: int) -> None:
        job_input, check = job_for(index)
        result = loop.run_until_complete(run_job({"id": f"soak-{index}", "input": job_input}, runtime, settings,
                                                 lambda p: None))
        if not check(result):
            report.wrong.append(f"job {index}: {json.dumps(result)[:300]}")

    try:
        for index in range(warmup):
            one(index)
        report.wrong.clear()
        report.start = _stats()
        started = time.monotonic()
        for index in range(warmup, warmup + jobs):
            one(index)
        report.seconds = time.monotonic() - started
        report.end = _stats()
        runtime.drain()  # per-job cleanup runs just after each result is returned
        report.files_left = {name: _files(folder) for name, folder in runtime.folders.items()}
        report.history_left = len(runtime.client._json("GET", "/history") or {})
        queue = runtime.client.queue()
        report.queue_left = len(queue.get("queue_running", [])) + len(queue.get("queue_pending", []))
    finally:
        loop.close()
        runtime.shutdown()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("comfy_worker").setLevel(logging.ERROR)
    logging.getLogger("comfyui").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        report = soak(Path(tmp), args.jobs, args.warmup)
    for line in report.lines():
        log.info("%s", line)
    for line in report.wrong[:5]:
        log.info("WRONG %s", line)


if __name__ == "__main__":
    main()
