"""Peak memory of the worker for a job with large outputs delivered to S3, against the outputs' sum.

The worker runs as users meet it: `handler.py --rp_serve_api` (the runpod SDK's local API server) in a
process of its own, managing the ComfyUI emulator, whose SaveVideo writes each output at the size asked
for (random, incompressible bytes); outputs go to a local SeaweedFS (S3). The job is sent to /runsync.

Memory is read from /proc/<worker pid>/status: VmRSS at idle (after a warm-up job of the same shape),
then VmHWM, the process's peak resident memory, over the measured job (reset just before it by writing
"5" to /proc/<pid>/clear_refs). ComfyUI (the emulator) is another process and is not counted.

Target: peak above idle <= the largest output + 64 MB, whatever the number of outputs.

    python benchmarks/bench_memory.py [--outputs 8] [--mb 64]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

from benchmarks.common import local_seaweedfs  # noqa: E402
from comfy_worker_dev.localserver import LocalWorkerServer  # noqa: E402
from comfy_worker_dev.emulator import FAULTS_ENV  # noqa: E402
from tests.workerkit import worker_env  # noqa: E402

MB = 1024 * 1024
SLACK = 64 * MB


def video_workflow(count: int, prefix: str) -> dict[str, Any]:
    """`count` independent EmptyImage -> CreateVideo -> SaveVideo branches: one large output each."""
    graph: dict[str, Any] = {}
    for i in range(count):
        base = 3 * i + 1
        graph[str(base)] = {"class_type": "EmptyImage",
                            "inputs": {"width": 64, "height": 64, "batch_size": 2, "color": i}}
        graph[str(base + 1)] = {"class_type": "CreateVideo", "inputs": {"images": [str(base), 0], "fps": 4.0}}
        graph[str(base + 2)] = {"class_type": "SaveVideo",
                                "inputs": {"video": [str(base + 1), 0], "filename_prefix": f"{prefix}/v{i}",
                                           "format": "auto", "format.codec": "auto"}}
    return graph


def kib_field(pid: int, name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(name)


def run_job(server: LocalWorkerServer, count: int, prefix: str) -> dict[str, Any]:
    job = {"workflow": video_workflow(count, prefix), "output_config": {"storage": {"provider": "s3"}}}
    answer = server.runsync(job, timeout=1200)
    if answer.get("status") != "COMPLETED":
        raise SystemExit(f"job failed: {json.dumps(answer)[:2000]}")
    return answer["output"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--outputs", type=int, default=8, help="outputs in the job")
    parser.add_argument("--mb", type=float, default=64.0, help="size of each output in MB")
    args = parser.parse_args()
    size = int(args.mb * MB)

    with local_seaweedfs() as s3, tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        env = worker_env(Path(tmp), LOG_LEVEL="INFO", BUCKET_ENDPOINT_URL=s3.endpoint,
                         BUCKET_ACCESS_KEY_ID=s3.access_key, BUCKET_SECRET_ACCESS_KEY=s3.secret_key,
                         BUCKET_NAME=s3.bucket)
        env[FAULTS_ENV] = json.dumps({"video_bytes": size})
        with open(Path(tmp) / "worker.log", "wb") as log_file, LocalWorkerServer(env, log_file=log_file) as server:
            assert server.proc is not None
            pid = server.proc.pid
            run_job(server, args.outputs, "warm")  # the same shape once: imports, clients and pools warm
            time.sleep(1.0)
            idle = kib_field(pid, "VmRSS")
            Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
            started = time.monotonic()
            output = run_job(server, args.outputs, "measured")
            seconds = time.monotonic() - started
            peak = kib_field(pid, "VmHWM")
        sizes = [entry["size"] for entry in output["outputs"]]
        delivered = [entry for entry in output["outputs"] if entry.get("storage") == "s3"]
        if len(delivered) != args.outputs or any(s != size for s in sizes):
            raise SystemExit(f"expected {args.outputs} outputs of {size} B delivered to S3, got {sizes}")
        keys = s3.keys()
    above = peak - idle
    target = max(sizes) + SLACK
    print(f"worker under the runpod SDK's local API server (pid {pid}), ComfyUI emulator, S3 = local SeaweedFS")
    print(f"job: {args.outputs} outputs x {args.mb:g} MB = {sum(sizes) / MB:.0f} MB, delivered to S3 in "
          f"{seconds:.1f} s ({len(keys)} objects in the bucket)")
    print(f"worker RSS idle {idle / MB:.1f} MB, peak during the job {peak / MB:.1f} MB, above idle "
          f"{above / MB:.1f} MB")
    print(f"above idle / sum of outputs = {above / sum(sizes):.3f}; above idle / largest output = "
          f"{above / max(sizes):.3f}")
    print(f"target: above idle <= largest output + 64 MB = {target / MB:.0f} MB -> "
          f"{'MET' if above <= target else 'MISSED'}")
    return 0 if above <= target else 1


if __name__ == "__main__":
    sys.exit(main())
