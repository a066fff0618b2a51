"""Throughput of the worker at MAX_CONCURRENCY 2 against 1, on a workload with real input and delivery I/O.

Each job downloads its input image from an HTTP server that answers after a delay (a remote URL), runs
LoadImage → ImageInvert → SaveImage in the ComfyUI emulator with a fixed per-node delay (the GPU time), and
uploads the result to a real S3 server (SeaweedFS on loopback). ComfyUI runs one prompt at a time either
way; at concurrency 2 the download and upload of one job overlap the execution of the other. The same jobs
run at both settings, alternating rounds, and the script prints jobs per second and the ratio.

    python benchmarks/bench_concurrency.py [--jobs 12] [--node-delay 0.25] [--fetch-delay 0.4] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import http.server
import io
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from PIL import Image  # noqa: E402

from benchmarks.common import local_seaweedfs
from comfy_worker.job import run_job  # noqa: E402
from tests.httpserve import serve_http
from tests.workerkit import boot_runtime  # noqa: E402

log = logging.getLogger("bench_concurrency")


def noisy_png(size: int) -> bytes:
    buf = io.BytesIO()
    Image.frombytes("RGB", (size, size), os.urandom(size * size * 3)).save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def slow_handler(payload: bytes, delay: float) -> type[http.server.BaseHTTPRequestHandler]:
    """Answers every GET with `payload` after `delay` seconds, as a slow input URL does."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            time.sleep(delay)
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            pass

    return Handler


async def run_batch(runtime, settings, jobs: int, concurrency: int, url: str, tag: str) -> float:  # type: ignore[no-untyped-def]
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with gate:
            job_input = {"workflow": {
                "1": {"class_type": "LoadImage", "inputs": {"image": "in.png"}},
                "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
                "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": f"c{i}"}}},
                "images": [{"name": "in.png", "image": url}],
                "output_config": {"storage": {"provider": "s3"}}}
            result = await run_job({"id": f"{tag}-{i}", "input": job_input}, runtime, settings, lambda p: None)
            if "error" in result:
                raise RuntimeError(result["error"])

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(jobs)))
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--node-delay", type=float, default=0.25, help="emulated GPU seconds per node")
    parser.add_argument("--fetch-delay", type=float, default=0.4, help="seconds before the input URL answers")
    parser.add_argument("--size", type=int, default=512, help="side of the noisy input image")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO)

    with (local_seaweedfs() as s3, tempfile.TemporaryDirectory(prefix="bench-concurrency-") as tmp,
          serve_http(slow_handler(noisy_png(args.size), args.fetch_delay)) as web):
        return measure(args, s3, Path(tmp), f"http://127.0.0.1:{web.server_port}/in.png")


def measure(args: argparse.Namespace, s3: Any, tmp: Path, url: str) -> int:
    runtime, settings = boot_runtime(
        tmp, LOG_LEVEL="WARNING", BUCKET_ENDPOINT_URL=s3.endpoint, BUCKET_ACCESS_KEY_ID=s3.access_key,
        BUCKET_SECRET_ACCESS_KEY=s3.secret_key, BUCKET_NAME=s3.bucket, ALLOW_PRIVATE_URLS="true",
        ALLOW_HTTP_URLS="true")
    try:
        runtime.client._request("POST", "/__emulator__/faults", json={"node_delay": args.node_delay})
        asyncio.run(run_batch(runtime, settings, 2, 1, url, "warm"))
        times: dict[int, list[float]] = {1: [], 2: []}
        for round_ in range(args.rounds):
            for concurrency in (1, 2):
                times[concurrency].append(asyncio.run(
                    run_batch(runtime, settings, args.jobs, concurrency, url, f"r{round_}c{concurrency}")))
        one, two = statistics.median(times[1]), statistics.median(times[2])
        log.info("workload: %d jobs; input fetched from a URL answering after %.2f s; 3 nodes at %.2f s each "
                 "(emulated GPU); %dx%d PNG output uploaded to SeaweedFS; %d CPU cores",
                 args.jobs, args.fetch_delay, args.node_delay, args.size, args.size, os.cpu_count() or 0)
        log.info("concurrency 1: %6.2f s  %.2f jobs/s   (median of %d rounds)", one, args.jobs / one, args.rounds)
        log.info("concurrency 2: %6.2f s  %.2f jobs/s", two, args.jobs / two)
        log.info("throughput ratio (2 / 1): %.2fx", one / two)
    finally:
        runtime.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
