"""Stream mode against a real ComfyUI (runs only when COMFYUI_DIR is set): a tiny SD 1.5 checkpoint written
by comfy_worker_dev.tiny_checkpoint (numpy, no download), KSampler with 8 steps and previews on, through the
worker's stream-mode handler; and the same job in the default mode, whose result keeps today's shape."""

from __future__ import annotations

import asyncio
import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from PIL import Image

from comfy_worker.app import WorkerApp, _job_handler
from comfy_worker.comfy import HttpComfy
from comfy_worker.settings import Settings
from comfy_worker_dev import apispec
from comfy_worker_dev.tiny_checkpoint import write_models_folder

from .test_live import comparable, sd_workflow
from .workerkit import boot_runtime, real_comfyui

pytestmark = [pytest.mark.real_comfyui,
              pytest.mark.skipif(real_comfyui() is None, reason="needs a real ComfyUI (COMFYUI_DIR)")]


@pytest.fixture(scope="module")
def comfyui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[HttpComfy, Settings]]:
    tmp = tmp_path_factory.mktemp("live-real")
    config = write_models_folder(tmp / "models")
    runtime, settings = boot_runtime(tmp / "comfyui", real=True, COMFYUI_EXTRA_MODEL_PATHS=str(config))
    try:
        yield runtime, settings
    finally:
        runtime.shutdown()


def handler_for(comfy: HttpComfy, settings: Settings):  # type: ignore[no-untyped-def]
    return _job_handler(WorkerApp(None, settings, comfy), settings, comfy)


def test_the_tiny_checkpoint_is_listed_as_a_checkpoint(comfyui):
    runtime, _ = comfyui
    assert "tiny-sd15.safetensors" in runtime.model_lists()["checkpoints"]


def test_stream_mode_with_previews_on_a_real_sampler(comfyui):
    runtime, settings = comfyui
    streaming = settings.model_copy(update={"stream_mode": True})
    handler = handler_for(runtime, streaming)
    job = {"id": "live-real", "input": {"workflow": sd_workflow(steps=8),
                                        "output_config": {"previews": {"max_per_second": 10}}}}

    async def collect() -> list[dict[str, Any]]:
        return [chunk async for chunk in handler(job)]

    chunks = asyncio.run(collect())
    runtime.drain()
    kinds = [c.get("event", "result") for c in chunks]
    assert "error" not in chunks[-1], chunks[-1]
    # Progress first, previews while KSampler runs (one at least every four of its 8 steps), the output, then
    # the result, in that order.
    assert kinds[0] == "progress" and kinds[-2:] == ["output", "result"], kinds
    previews = [c for c in chunks if c.get("event") == "preview"]
    assert len(previews) >= 2, kinds
    assert all(p["node"] == "3" and p["class_type"] == "KSampler" and p["max_steps"] == 8 for p in previews)
    steps = [p["step"] for p in previews]
    assert steps == sorted(steps) and kinds.index("output") > kinds.index("preview")
    with Image.open(io.BytesIO(base64.b64decode(previews[0]["image"].split(",", 1)[1]))) as image:
        assert image.format == "JPEG" and max(image.size) <= 256
    output = next(c for c in chunks if c.get("event") == "output")["output"]
    result = chunks[-1]
    assert output["node_id"] == "9" and output["filename"] == result["outputs"][0]["filename"]
    schema = json.loads(apispec.schema_path("stream-chunk").read_text())
    for chunk in chunks:
        jsonschema.validate(chunk, schema)


def test_the_default_mode_is_unchanged_on_a_real_comfyui(comfyui, tmp_path: Path):
    runtime, settings = comfyui
    workflow = sd_workflow(steps=2)
    plain = asyncio.run(handler_for(runtime, settings)({"id": "plain", "input": {"workflow": workflow}}))
    runtime.drain()
    streaming = settings.model_copy(update={"stream_mode": True})

    async def last() -> dict[str, Any]:
        return [c async for c in handler_for(runtime, streaming)({"id": "plain", "input": {"workflow": workflow}})][-1]

    streamed = asyncio.run(last())
    runtime.drain()
    assert "error" not in plain, plain
    jsonschema.validate(plain, json.loads(apispec.schema_path("job-result").read_text()))
    assert set(plain) == {"prompt_id", "outputs", "images", "timings", "warnings", "worker_version"}
    assert comparable(plain) == comparable(streamed)
