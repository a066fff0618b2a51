"""When a job's pre-flight runs on the event loop: only when it needs nothing but memory (ComfyUI's lists
cached, no model to fetch by URL or on demand, a small graph). Anything else goes to a thread, so a download
never blocks the loop that posts progress and runs other jobs."""

from __future__ import annotations

from pathlib import Path

import pytest

from comfy_worker.comfy.fake import FakeComfy
from comfy_worker.prepare import INLINE_NODES, in_memory
from comfy_worker.schema import parse_job_input
from comfy_worker.settings import Settings

from .captures import capture
from .workerkit import empty_image_workflow

CATALOGUE = capture("object_info.json")


@pytest.fixture
def comfy(tmp_path: Path) -> FakeComfy:
    return FakeComfy(CATALOGUE, root=tmp_path / "comfyui")


def settings(tmp_path: Path, manifest: str | None = None, **extra: object) -> Settings:
    path = tmp_path / "models.yaml"
    if manifest is not None:
        path.write_text(manifest)
    return Settings(models_manifest=path, **extra)


ON_DEMAND = """models:
  - url: https://huggingface.co/o/r/resolve/main/a.safetensors
    folder: loras
    fetch: on_demand
"""


def test_a_small_graph_with_cached_lists_is_checked_in_memory(comfy: FakeComfy, tmp_path: Path):
    assert in_memory(parse_job_input({"workflow": empty_image_workflow()}), comfy, settings(tmp_path))


@pytest.mark.parametrize("job_input", [
    {"workflow": empty_image_workflow(), "models": [{"url": "https://huggingface.co/o/r/resolve/main/a.safetensors"}]},
    {"workflow": empty_image_workflow(), "inputs": {"1.width": "https://huggingface.co/o/r/a.safetensors"}},
    {"workflow": {**empty_image_workflow(), "9": {"class_type": "LoraLoaderModelOnly",
                                                  "inputs": {"lora_name": "s3://bucket/a.safetensors"}}}},
    {"workflow": {str(i): {"class_type": "EmptyImage", "inputs": {}} for i in range(INLINE_NODES + 1)}},
], ids=["models", "url-in-inputs", "url-in-graph", "large-graph"])
def test_anything_that_may_need_io_goes_to_a_thread(comfy: FakeComfy, tmp_path: Path, job_input: dict):
    assert not in_memory(parse_job_input(job_input), comfy, settings(tmp_path))


def test_an_on_demand_manifest_sends_every_check_to_a_thread(comfy: FakeComfy, tmp_path: Path):
    request = parse_job_input({"workflow": empty_image_workflow()})
    assert not in_memory(request, comfy, settings(tmp_path, ON_DEMAND))
    assert in_memory(request, comfy, settings(tmp_path, ON_DEMAND, model_download_on_demand=False))


def test_lists_not_cached_go_to_a_thread(comfy: FakeComfy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(comfy, "lists_cached", lambda: False)
    assert not in_memory(parse_job_input({"workflow": empty_image_workflow()}), comfy, settings(tmp_path))
