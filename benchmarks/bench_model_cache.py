"""Models by URL through a shared cache: two worker processes sharing one cache folder run four jobs at once that
name the same model file by URL. The model host counts the downloads (the target: one) and the time of the four
jobs is printed against the time of one job downloading the file alone.

The host is a local HTTP server behind a link of limited bandwidth shared by all its connections (`--mbps`, MB/s),
as a model host's uplink would be: four separate downloads would take about four times as long as one. Each worker
process runs its jobs through the worker's own job pipeline (`run_job`) against the in-process FakeComfy, so the
figures are the fetch, the cache's locks and the verification, not ComfyUI.

    .venv/bin/python benchmarks/bench_model_cache.py [--mb 256] [--mbps 200] [--workers 2] [--jobs 2] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

log = logging.getLogger("bench_model_cache")
NAME = "shared.safetensors"


def safetensors_of(size: int) -> bytes:
    """A valid safetensors file of about `size` bytes: one uint8 tensor of zeros."""
    header = json.dumps({"w": {"dtype": "U8", "shape": [size], "data_offsets": [0, size]}}).encode()
    header += b" " * (-len(header) % 8)
    return len(header).to_bytes(8, "little") + header + bytes(size)


class Link:
    """Bandwidth shared by every connection of the server: each piece waits for its turn on the wire."""

    def __init__(self, bytes_per_second: float) -> None:
        self.rate = bytes_per_second
        self.next = time.monotonic()
        self.lock = threading.Lock()

    def send(self, count: int) -> None:
        if self.rate <= 0:
            return
        with self.lock:
            start = max(self.next, time.monotonic())
            self.next = start + count / self.rate
        time.sleep(max(0.0, self.next - time.monotonic()))


def serve(body: bytes, link: Link) -> tuple[ThreadingHTTPServer, list[str]]:
    bodies: list[str] = []  # one entry per body sent (a Range request too)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            start = int((self.headers.get("Range") or "bytes=0-").removeprefix("bytes=").split("-")[0] or 0)
            self.send_response(206 if start else 200)
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            self.send_header("Content-Length", str(len(body) - start))
            self.end_headers()
            bodies.append(self.headers.get("Range") or "whole")
            view = memoryview(body)[start:]
            for offset in range(0, len(view), 1 << 18):
                piece = view[offset:offset + (1 << 18)]
                link.send(len(piece))
                self.wfile.write(piece)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, bodies


def worker(url: str, cache: str, jobs: int) -> None:
    """One worker process: says it is ready, waits for `go` on stdin, runs its jobs at once, prints the results."""
    from comfy_worker.comfy.fake import FakeComfy
    from comfy_worker.job import run_job
    from comfy_worker.settings import Settings
    from comfy_worker_dev.emulator.catalogue import load_object_info

    settings = Settings(model_cache_dir=Path(cache), model_url_hosts="127.0.0.1", allow_private_urls=True,
                        allow_http_urls=True, model_download_timeout=120, log_level="WARNING")
    comfy = FakeComfy(load_object_info(), models={"loras": []}, root=Path(cache).parent / f"comfy-{os.getpid()}")
    workflow = {"1": {"class_type": "CreateHookLora", "inputs": {"lora_name": url, "strength_model": 1.0,
                                                                 "strength_clip": 1.0}},
                "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}

    async def run_all() -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(run_job({"id": f"{os.getpid()}-{n}", "input": {"workflow": workflow}},
                                                   comfy, settings, lambda p: None) for n in range(jobs))))

    print("ready", flush=True)
    sys.stdin.readline()
    started = time.monotonic()
    results = asyncio.run(run_all())
    print(json.dumps({"seconds": time.monotonic() - started,
                      "ok": sum(1 for r in results if "error" not in r),
                      "errors": [r["error"] for r in results if "error" in r],
                      "fetch": [r.get("timings", {}).get("fetch_models") for r in results]}), flush=True)


def run_workers(url: str, cache: Path, workers: int, jobs: int) -> tuple[float, list[dict[str, Any]]]:
    """Start the worker processes, let them import, then start all jobs at once; the seconds from `go` until
    the last job ended (as the workers measured them, without their start and exit), and their reports."""
    procs = [subprocess.Popen([sys.executable, __file__, "worker", url, str(cache), str(jobs)], cwd=ROOT,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(workers)]
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    reports = []
    for proc in procs:
        out, _ = proc.communicate(timeout=600)
        reports.append(json.loads(out.strip().splitlines()[-1]))
    return max(report["seconds"] for report in reports), reports


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=256, help="size of the model file (MB)")
    parser.add_argument("--mbps", type=float, default=200.0, help="the host's uplink, MB/s (0: unlimited)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=2, help="jobs per worker, all at once")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of (one job alone, all jobs), medians shown")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    body = safetensors_of(args.mb * 1024 * 1024)
    server, bodies = serve(body, Link(args.mbps * 1024 * 1024))
    url = f"http://127.0.0.1:{server.server_port}/files/{NAME}"
    scratch = Path(tempfile.mkdtemp(prefix="bench-model-cache-"))
    total = args.workers * args.jobs
    alone, together, downloads, completed = [], [], [], []
    try:
        for round_ in range(args.rounds):
            seconds, [single] = run_workers(url, scratch / f"alone-{round_}" / "cache", 1, 1)
            alone.append(seconds)
            completed.append(single["ok"] == 1)
            del bodies[:]
            seconds, reports = run_workers(url, scratch / f"shared-{round_}" / "cache", args.workers, args.jobs)
            together.append(seconds)
            downloads.append(len(bodies))
            completed.append(sum(r["ok"] for r in reports) == total)
            for report in reports:
                for error in report["errors"]:
                    log.error("job failed: %s", error[:300])
    finally:
        server.shutdown()
        server.server_close()
        shutil.rmtree(scratch, ignore_errors=True)
    log.info("model file: %d MB over a %s link; %d rounds", args.mb,
             f"{args.mbps:g} MB/s" if args.mbps else "unlimited", args.rounds)
    log.info("one job, one download: median %.2f s (%s)", statistics.median(alone), _seconds(alone))
    log.info("%d jobs in %d worker processes sharing one cache: median %.2f s (%s); %s completed", total,
             args.workers, statistics.median(together), _seconds(together),
             "all" if all(completed) else "NOT all")
    log.info("downloads the host served per round: %s (target: 1)", ", ".join(map(str, downloads)))
    log.info("time of %d jobs / time of one download = %.2f", total,
             statistics.median(together) / statistics.median(alone))
    return 0 if all(completed) and set(downloads) == {1} else 1


def _seconds(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        worker(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        sys.exit(main())
