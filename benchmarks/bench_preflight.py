"""Pre-flight time of a 200-node graph against the full catalogue; target: under 50 ms.

Run: python benchmarks/bench_preflight.py
"""

from __future__ import annotations

import json
import random
import logging
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from comfy_worker.errors import WorkerError  # noqa: E402
from comfy_worker.schema import parse_job_input  # noqa: E402
from comfy_worker.settings import Settings  # noqa: E402
from comfy_worker.workflow import build_workflow, preflight, to_api_workflow  # noqa: E402
from comfy_worker.workflow.convert import dynamic_prompt  # noqa: E402
from comfy_worker.workflow.overrides import MAX_KEY_CHARS  # noqa: E402
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
    hostile_inputs(object_info)


def hostile_inputs(object_info: dict) -> None:
    """What a hostile request costs: a UI widget of 120 KB of unclosed comments (quadratic in a backtracking
    regex: 28 s before), and a 1 MB request at the size caps (texts of MAX_TEXT_CHARS, the longest input
    keys, many nodes) parsed, converted, given its inputs and checked. Targets: milliseconds, and well under
    a second."""
    started = time.perf_counter()
    dynamic_prompt("/*a" * 40000, random.Random(1))
    comment_ms = (time.perf_counter() - started) * 1000
    settings = Settings()
    text = "/*a" * (settings.max_text_chars // 3)
    ui = {"nodes": [], "links": [], "version": 0.4}
    for i in range(3):
        ui["nodes"].append({"id": i + 1, "type": "CLIPTextEncode", "mode": 0, "inputs": [], "outputs": [],
                            "widgets_values": [text], "title": "t" + "." * (MAX_KEY_CHARS - 10)})
    body = {"workflow": graph_of(400), "inputs": {f"{'x.' * 200}{i}.text": "y" for i in range(100)}}
    raw = {"workflow": ui}
    size = len(json.dumps(raw)) + len(json.dumps(body))
    started = time.perf_counter()
    request = parse_job_input(raw, **settings.input_limits())
    to_api_workflow(request.workflow, object_info, rng=random.Random(1))
    request = parse_job_input(body, **settings.input_limits())
    try:
        build_workflow(request.workflow, object_info, inputs=request.inputs)
    except WorkerError:
        pass  # the keys name no node: refused, and what matters is how long it took to say so
    preflight(graph_of(400), object_info, {})
    request_ms = (time.perf_counter() - started) * 1000
    log.info("120 KB of unclosed comments converted in %.1f ms (target: milliseconds)", comment_ms)
    log.info("a %.1f MB request at the size caps prepared in %.0f ms (target: well under 1000 ms)", size / 1e6,
             request_ms)


if __name__ == "__main__":
    main()
