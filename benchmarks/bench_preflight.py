"""Pre-flight time of a 200-node graph against the full catalogue; target: under 50 ms.

Run: python benchmarks/bench_preflight.py
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from comfy_worker.workflow import preflight  # noqa: E402
from comfy_worker_dev.emulator.catalogue import OBJECT_INFO_PATH  # noqa: E402

log = logging.getLogger("bench_preflight")
TARGET_MS = 50.0


def graph_of(size: int) -> dict:
    graph = {"0": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}}}
    for i in range(1, size - 1):
        graph[str(i)] = {"class_type": "ImageInvert", "inputs": {"image": [str(i - 1), 0]}}
    graph[str(size - 1)] = {"class_type": "SaveImage", "inputs": {"images": [str(size - 2), 0], "filename_prefix": "b"}}
    return graph


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    object_info = json.loads(OBJECT_INFO_PATH.read_text())
    sd = json.loads((ROOT / "tests/fixtures/comfyui/sd_txt2img_run1_request.json").read_text())["prompt"]
    graph = graph_of(200 - len(sd))
    graph.update({f"sd{k}": {**v, "inputs": {n: ([f"sd{x[0]}", x[1]] if isinstance(x, list) else x)
                                             for n, x in v["inputs"].items()}} for k, v in sd.items()})
    models = {"checkpoints": ["tiny-sd15.safetensors"]}
    runs = 50
    start = time.perf_counter()
    for _ in range(runs):
        report = preflight(graph, object_info, models)
    elapsed_ms = (time.perf_counter() - start) * 1000 / runs
    log.info("nodes=%d ok=%s preflight=%.2f ms target=%.0f ms ratio=%.2f", len(graph), report.ok, elapsed_ms,
             TARGET_MS, elapsed_ms / TARGET_MS)


if __name__ == "__main__":
    main()
