"""When the result is ready after the last node: outputs delivered as their node finishes, against all of
them delivered at the end.

The ComfyUI emulator runs a graph of two SaveVideo nodes whose outputs are `--mb` MB each (random bytes) and
that finish `--gap` seconds apart; outputs go to a local SeaweedFS (S3). The same job runs twice: with the
worker's default key template (each output uploaded while the graph runs on), and with a key template that
uses `{index}` (keys that depend on every output: everything is uploaded at the end, as before). For each
run it prints the seconds from the last node's `executed` event, as the worker received it, to the result;
and, for comparison, the seconds one output alone takes to deliver (hash and upload).

Target: with delivery as nodes finish, the result comes within one upload's time after the last node (plus
0.5 s of ComfyUI's end-of-prompt messages and history read), not after both uploads.

    python benchmarks/bench_live_delivery.py [--mb 64] [--gap 5] [--rounds 1]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

from benchmarks.common import local_seaweedfs  # noqa: E402
from comfy_worker import incremental  # noqa: E402
from comfy_worker.delivery import DeliveryContext, deliver_outputs  # noqa: E402
from comfy_worker.job import run_job  # noqa: E402
from comfy_worker.media.outputs import ProducedOutput  # noqa: E402
from comfy_worker.schema import OutputConfig, StorageConfig  # noqa: E402
from tests.workerkit import boot_runtime  # noqa: E402

MB = 1024 * 1024
_COLORS = itertools.count(1)


def two_videos(prefix: str) -> dict[str, Any]:
    save = {"format": "auto", "format.codec": "auto"}
    color = next(_COLORS)  # a graph of its own each time: nothing comes from ComfyUI's cache
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 16, "batch_size": 2, "color": color}},
        "2": {"class_type": "CreateVideo", "inputs": {"images": ["1", 0], "fps": 8.0}},
        "3": {"class_type": "SaveVideo", "inputs": {"video": ["2", 0], "filename_prefix": f"{prefix}/a", **save}},
        "4": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "5": {"class_type": "CreateVideo", "inputs": {"images": ["4", 0], "fps": 8.0}},
        "6": {"class_type": "SaveVideo", "inputs": {"video": ["5", 0], "filename_prefix": f"{prefix}/b", **save}},
    }


class ExecutedClock:
    """When the worker received each `executed` event (the last node's is what the result waits after)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        original = incremental.OutputDelivery.on_executed
        clock = self

        def on_executed(self: Any, prompt_id: str, item: Any, event: Any) -> None:
            clock.times.append(time.monotonic())
            original(self, prompt_id, item, event)

        incremental.OutputDelivery.on_executed = on_executed  # type: ignore[method-assign]


def one_job(runtime: Any, settings: Any, storage: dict[str, Any], clock: ExecutedClock, name: str) -> float:
    clock.times.clear()
    result = asyncio.run(run_job({"id": name, "input": {"workflow": two_videos(name), "output_config": {
        "storage": {"provider": "s3", **storage}}}}, runtime, settings, lambda p: None))
    done = time.monotonic()
    if "error" in result or len(result["outputs"]) != 2 or len(clock.times) != 2:
        raise SystemExit(f"job {name} failed: {str(result)[:2000]}")
    runtime.drain()
    return done - clock.times[-1]


def one_upload(settings: Any, folder: Path, size: int, n: int) -> float:
    path = folder / f"single-{n}.mp4"
    with open(path, "wb") as out:
        out.write(Path("/dev/urandom").open("rb").read(size))
    item = ProducedOutput(node_id="1", key="images", kind="video", mime_type="video/mp4", path=path)
    started = time.monotonic()
    deliver_outputs(DeliveryContext(f"single-{n}", "p"), [item], OutputConfig(storage=StorageConfig(provider="s3")),
                    None, settings)
    seconds = time.monotonic() - started
    path.unlink()
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, default=64.0, help="size of each output in MB")
    parser.add_argument("--gap", type=float, default=5.0, help="seconds between the two output nodes")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    size = int(args.mb * MB)
    clock = ExecutedClock()
    early, late, single = [], [], []
    with local_seaweedfs() as s3, tempfile.TemporaryDirectory(prefix="bench-live-") as tmp:
        runtime, base = boot_runtime(Path(tmp), faults={"video_bytes": size, "delay_on_node": {"6": args.gap}})
        try:
            settings = base.model_copy(update={
                "bucket_endpoint_url": s3.endpoint, "bucket_access_key_id": s3.settings().bucket_access_key_id,
                "bucket_secret_access_key": s3.settings().bucket_secret_access_key, "bucket_name": s3.bucket,
                "allow_private_urls": True, "allow_http_urls": True})
            one_job(runtime, settings, {}, clock, "warm")  # clients, pools and imports warm
            for n in range(args.rounds):
                early.append(one_job(runtime, settings, {}, clock, f"early{n}"))
                late.append(one_job(runtime, settings, {"key_template": "{job_id}/{index}-{filename}"}, clock,
                                    f"late{n}"))
                single.append(one_upload(settings, Path(tmp), size, n))
        finally:
            runtime.shutdown()
    e, l, s = statistics.median(early), statistics.median(late), statistics.median(single)
    print(f"job: 2 outputs x {args.mb:g} MB to S3 (local SeaweedFS), output nodes {args.gap:g} s apart, "
          f"emulator; {args.rounds} round(s), medians")
    print(f"result after the last node: {e:.2f} s delivered as each node finishes; {l:.2f} s delivered at the end")
    print(f"one output alone (hash + upload): {s:.2f} s")
    print(f"(as nodes finish) / (one upload) = {e / s:.2f}; (at the end) / (one upload) = {l / s:.2f}")
    met = e <= s + 0.5
    print(f"target: as nodes finish <= one upload + 0.5 s = {s + 0.5:.2f} s -> {'MET' if met else 'MISSED'}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
