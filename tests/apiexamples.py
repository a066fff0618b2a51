"""The JSON examples of docs/api.md, produced by runs of the worker with the ComfyUI emulator as its ComfyUI
(docs/api.md says so where it shows them).

Every example job is sent through the runpod SDK's local API server (`handler.py --rp_serve_api`) to a worker
whose ComfyUI is the emulator; the progress example comes from the same pipeline with its progress sink.
What changes from run to run (ids, timings, base64, hashes, temporary paths) is replaced by stable
placeholders, so the files in docs/examples/ only change when the worker's answers change.

    PYTHONPATH=src python -m tests.apiexamples --write     # regenerate docs/examples/*.json
    PYTHONPATH=src python -m tests.apiexamples             # report stale files, exit 1 if any
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from comfy_worker_dev.localserver import LocalWorkerServer
from comfy_worker_dev.emulator import FAULTS_ENV
from tests.workerkit import boot_runtime, png_b64, run, worker_env

log = logging.getLogger("tests.apiexamples")

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES_DIR = ROOT / "docs" / "examples"

PROMPT_ID = "8684e646-416d-48fa-b98e-55c2fff4900d"
JOB_ID = "test-0b1c2d3e-4f5a-4c2a-9e7d-a8d3c1e05f6b"
SHA256 = "ace27ebf" + "0" * 56
B64_SHORT = "iVBORw0KGgo…"
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_JOB_ID = re.compile(r"test-" + _UUID.pattern)
_TOKEN = re.compile(r"cw[0-9a-f]{6,}")

# Faults injected at boot: each names a node type used by one example only.
FAULTS = {"oom_on_node": "ImageBlur", "error_on_node": "ImageSharpen"}
ENV = {"NODE_DENYLIST": "SaveAnimatedWEBP"}


def _invert(image_name: str = "example.png") -> dict[str, Any]:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": image_name}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "inverted"}},
    }


def _through(class_type: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
        "2": {"class_type": class_type, "inputs": {"image": ["1", 0], **(extra or {})}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "out"}},
    }


def requests_() -> dict[str, dict[str, Any]]:
    """name -> job input. `completed` and `failed-*` names pick the docs section each example belongs to."""
    image = png_b64((64, 64), (200, 40, 40))
    return {
        "completed": {"workflow": _invert(), "images": [{"name": "example.png", "image": image}]},
        "completed-dry-run": {"workflow": _invert(), "images": [{"name": "example.png", "image": image}],
                              "execution_config": {"dry_run": True}},
        "failed-INVALID_INPUT": {"workflow": _invert(), "images": [{"name": "../example.png", "image": image}],
                                 "seed": 5},
        "failed-INVALID_WORKFLOW": {"workflow": {
            "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
            "2": {"class_type": "FancyUpscaler", "inputs": {"image": ["1", 0]}},
            "3": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}}}},
        "failed-MISSING_MODELS": {"workflow": {
            "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd_xl_base_1.0.safetensors"}},
            "2": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1}},
            "3": {"class_type": "KSampler", "inputs": {
                "model": ["1", 0], "positive": ["4", 0], "negative": ["4", 0], "latent_image": ["2", 0],
                "seed": 1, "steps": 20, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal",
                "denoise": 1.0}},
            "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["1", 1]}},
            "5": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["1", 2]}},
            "6": {"class_type": "SaveImage", "inputs": {"images": ["5", 0], "filename_prefix": "cat"}}}},
        "failed-POLICY_VIOLATION": {"workflow": {
            "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
            "2": {"class_type": "SaveAnimatedWEBP", "inputs": {
                "images": ["1", 0], "filename_prefix": "anim", "fps": 6.0, "lossless": False, "quality": 80,
                "method": "default"}}}},
        "failed-EXECUTION_ERROR": {"workflow": _through("ImageSharpen", {
            "sharpen_radius": 1, "sigma": 1.0, "alpha": 1.0})},
        "failed-OUT_OF_MEMORY": {"workflow": _through("ImageBlur", {"blur_radius": 1, "sigma": 1.0})},
    }


def normalise(value: Any, key: str | None = None) -> Any:
    """Replace what differs between runs with stable placeholders, keeping every type."""
    if isinstance(value, dict):
        if key == "timings":
            return {k: 0.01 for k in value}
        return {k: normalise(v, k) for k, v in value.items()}
    if isinstance(value, list):
        if key in {"traceback", "log_tail"}:
            return ["…"]
        return [normalise(v) for v in value]
    if isinstance(value, str):
        if key == "error":
            try:
                inner = json.loads(value)
            except ValueError:
                return value
            return json.dumps(normalise(inner), ensure_ascii=False)
        if key == "data":
            return B64_SHORT
        if key == "image" and len(value) > 64:
            # A preview's data URI keeps its header.
            return value.split(",", 1)[0] + ",/9j/4AAQ…" if value.startswith("data:") else B64_SHORT
        if key == "sha256":
            return SHA256
        if key in {"id", "job_id"}:
            return JOB_ID
        value = _JOB_ID.sub(JOB_ID, value)
        value = _UUID.sub(PROMPT_ID, value)
        return _TOKEN.sub("cw0000000000", value)
    if key == "size" and isinstance(value, int):
        return 1024
    return value


@contextmanager
def _server(tmp: Path) -> Iterator[LocalWorkerServer]:
    env = worker_env(tmp, **ENV, LOG_LEVEL="INFO", **{FAULTS_ENV: json.dumps(FAULTS)})
    with open(tmp / "worker.log", "wb") as log_file, LocalWorkerServer(env, log_file=log_file) as server:
        yield server


def _progress(tmp: Path) -> list[dict[str, Any]]:
    runtime, settings = boot_runtime(tmp, faults={"node_delay": 0.6})
    try:
        sent: list[dict[str, Any]] = []
        result = run(runtime, settings, {"workflow": _through("ImageInvert")}, job_id=JOB_ID, progress=sent)
        assert "error" not in result, result
        return sent
    finally:
        runtime.shutdown()


def stream_request() -> dict[str, Any]:
    """The stream-mode example: the captured tiny SD 1.5 graph, 4 steps, previews on."""
    from tests.captures import capture

    graph = json.loads(json.dumps(capture("sd_txt2img_with_previews_request.json")["prompt"]))
    return {"workflow": graph, "output_config": {"previews": {"max_per_second": 2}}}


def _stream(tmp: Path) -> list[dict[str, Any]]:
    """The chunks of a stream-mode job (what /runsync returns as `output` on an endpoint in stream mode)."""
    import asyncio

    from comfy_worker.app import WorkerApp, _job_handler

    runtime, settings = boot_runtime(tmp)
    try:
        (settings.comfyui_dir / "models" / "checkpoints" / "tiny-sd15.safetensors").write_bytes(b"emulated")
        streaming = settings.model_copy(update={"stream_mode": True})
        handler = _job_handler(WorkerApp(None, streaming, runtime), streaming, runtime)

        async def chunks() -> list[dict[str, Any]]:
            return [c async for c in handler({"id": JOB_ID, "input": stream_request()})]

        found = asyncio.run(chunks())
        runtime.drain()
        assert "error" not in found[-1], found[-1]
        return found
    finally:
        runtime.shutdown()


def generate() -> dict[str, Any]:
    """Run every example; name -> normalised JSON (request bodies and status responses)."""
    examples: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="api-examples-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "server").mkdir()
        with _server(tmp / "server") as server:
            for name, job_input in requests_().items():
                examples[f"{name}.request"] = normalise({"input": job_input})
                examples[f"{name}.response"] = normalise(server.runsync(job_input))
        (tmp / "progress").mkdir()
        sent = _progress(tmp / "progress")
        (tmp / "stream").mkdir()
        chunks = _stream(tmp / "stream")
    examples["stream.request"] = normalise({"input": stream_request()})
    examples["stream.response"] = normalise({"id": JOB_ID, "status": "COMPLETED", "output": chunks})
    running = [p for p in sent if p["stage"] == "running" and p["node"] is not None]
    example = running[len(running) // 2] if running else sent[-1]
    examples["in-progress.response"] = normalise({"id": JOB_ID, "status": "IN_PROGRESS", "output": example})
    return examples


def render(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False) + "\n"


def stale(examples: dict[str, Any]) -> list[Path]:
    out = []
    for name, value in examples.items():
        path = EXAMPLES_DIR / f"{name}.json"
        if not path.exists() or path.read_text() != render(value):
            out.append(path)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help="rewrite docs/examples/*.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    examples = generate()
    paths = stale(examples)
    if args.write:
        EXAMPLES_DIR.mkdir(parents=True, exist_ok=True)
        for path in paths:
            path.write_text(render(examples[path.name.removesuffix(".json")]))
    for path in paths:
        log.info("%s: %s", "updated" if args.write else "stale", path.relative_to(ROOT))
    return 1 if paths and not args.write else 0


if __name__ == "__main__":
    sys.exit(main())
