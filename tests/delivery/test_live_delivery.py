"""Outputs delivered as their node finishes: the ComfyUI emulator runs a graph whose two output nodes finish
apart, the worker uploads each to SeaweedFS while the graph runs; a cancel, a timeout or a failure between
the two leaves the first delivered and announced (or, announced to no one, removed) and the second neither."""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from comfy_worker.comfy import HttpComfy
from comfy_worker.job import run_job
from comfy_worker.settings import Settings

from tests.workerkit import boot_runtime, files_under

SIZE = 6 * 1024 * 1024


_COLORS = itertools.count(1)


def two_videos(first: str = "video/a", second: str = "video/b") -> dict[str, Any]:
    """Two SaveVideo nodes on two branches; node 6 is made slow, so node 3 finishes well before it. A color of
    its own each time: nothing comes from ComfyUI's cache, so the nodes run in the same order every time."""
    save = {"format": "auto", "format.codec": "auto"}
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 16, "batch_size": 2,
                                                      "color": next(_COLORS)}},
        "2": {"class_type": "CreateVideo", "inputs": {"images": ["1", 0], "fps": 8.0}},
        "3": {"class_type": "SaveVideo", "inputs": {"video": ["2", 0], "filename_prefix": first, **save}},
        "4": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "5": {"class_type": "CreateVideo", "inputs": {"images": ["4", 0], "fps": 8.0}},
        "6": {"class_type": "SaveVideo", "inputs": {"video": ["5", 0], "filename_prefix": second, **save}},
    }


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[HttpComfy, Settings, Path]]:
    tmp = tmp_path_factory.mktemp("live-delivery")
    runtime, settings = boot_runtime(tmp, faults={"video_bytes": SIZE})
    try:
        yield runtime, settings, tmp
    finally:
        runtime.shutdown()


def set_faults(settings: Settings, **fields: Any) -> None:
    answer = requests.post(f"{settings.base_url}/__emulator__/faults", json={"video_bytes": SIZE, "error_on_node": None, "delay_on_node": {}, **fields},
                           timeout=5)
    answer.raise_for_status()


def with_s3(settings: Settings, s3: Any, **extra: Any) -> Settings:
    return settings.model_copy(update={**s3.settings().model_dump(include={
        "bucket_endpoint_url", "bucket_access_key_id", "bucket_secret_access_key", "bucket_name",
        "allow_private_urls", "allow_http_urls"}), **extra})


class Watcher:
    """A stream sink that runs `on_output` when the first output is announced (on the job's event loop)."""

    def __init__(self, on_first_output: Any = None) -> None:
        self.chunks: list[dict[str, Any]] = []
        self.on_first_output = on_first_output

    def __call__(self, chunk: dict[str, Any]) -> None:
        self.chunks.append(chunk)
        if chunk["event"] == "output" and self.on_first_output is not None:
            callback, self.on_first_output = self.on_first_output, None
            callback(chunk)

    @property
    def outputs(self) -> list[dict[str, Any]]:
        return [c["output"] for c in self.chunks if c["event"] == "output"]


def test_the_first_output_is_in_storage_while_the_second_node_still_runs(emulator, s3):
    runtime, settings, _ = emulator
    set_faults(settings, delay_on_node={"6": 60.0})
    seen: dict[str, Any] = {}

    def first(chunk: dict[str, Any]) -> None:
        # Announced while node 6 runs: its object is in the bucket already, and the prompt still runs.
        seen["keys"] = s3.keys()
        seen["queue"] = requests.get(f"{settings.base_url}/queue", timeout=5).json()["queue_running"]
        set_faults(settings)  # node 6 may finish now

    watcher = Watcher(first)
    result = asyncio.run(run_job({"id": "job-early", "input": {
        "workflow": two_videos(), "output_config": {"storage": {"provider": "s3"}}}},
        runtime, with_s3(settings, s3), lambda p: None, stream=watcher))
    runtime.drain()
    assert "error" not in result, result
    [first_entry, second_entry] = result["outputs"]
    assert first_entry["node_id"] == "3" and second_entry["node_id"] == "6"
    assert seen["keys"] == [first_entry["object_key"]] and seen["queue"] != []
    assert [o["object_key"] for o in watcher.outputs] == [first_entry["object_key"], second_entry["object_key"]]
    assert s3.keys() == sorted(e["object_key"] for e in result["outputs"])
    body = s3.client().get_object(Bucket=s3.bucket, Key=first_entry["object_key"])["Body"].read()
    assert len(body) == first_entry["size"] >= SIZE


def test_results_keep_the_history_order_whatever_order_nodes_finish_in(emulator, s3):
    """Node 6 saves the branch ComfyUI runs first: its output is delivered first, the result lists 3 then 6."""
    runtime, settings, _ = emulator
    set_faults(settings, delay_on_node={"4": 0.5})
    graph = two_videos()
    graph["3"]["inputs"]["video"], graph["6"]["inputs"]["video"] = ["5", 0], ["2", 0]
    watcher = Watcher()
    result = asyncio.run(run_job({"id": "job-order", "input": {
        "workflow": graph, "output_config": {"storage": {"provider": "s3"}}}},
        runtime, with_s3(settings, s3), lambda p: None, stream=watcher))
    runtime.drain()
    assert [o["node_id"] for o in watcher.outputs] == ["6", "3"]
    assert [o["node_id"] for o in result["outputs"]] == ["3", "6"]
    assert [o["filename"] for o in result["outputs"]] == ["a_00001_.mp4", "b_00001_.mp4"]


def test_a_cancel_between_the_two_keeps_the_first_and_never_delivers_the_second(emulator, s3):
    runtime, settings, tmp = emulator
    set_faults(settings, delay_on_node={"6": 30.0})
    cancelled = threading.Event()

    async def scenario() -> Watcher:
        task: asyncio.Task[Any] | None = None

        def first(chunk: dict[str, Any]) -> None:
            assert task is not None
            task.cancel()  # RunPod's /cancel while node 6 runs
            cancelled.set()

        watcher = Watcher(first)
        task = asyncio.ensure_future(run_job({"id": "job-cancel", "input": {
            "workflow": two_videos(), "output_config": {"storage": {"provider": "s3"}}}},
            runtime, with_s3(settings, s3), lambda p: None, stream=watcher))
        with pytest.raises(asyncio.CancelledError):
            await task
        return watcher

    watcher = asyncio.run(scenario())
    assert runtime.drain(60)
    assert cancelled.is_set()
    [announced] = watcher.outputs
    assert announced["node_id"] == "3"
    # The first stays where it was announced to be; the second was never produced nor uploaded.
    assert s3.keys() == [announced["object_key"]]
    assert requests.get(announced["url"], timeout=10).status_code == 200
    # ComfyUI stopped the prompt, and the job's files went with the cleanup.
    assert requests.get(f"{settings.base_url}/queue", timeout=5).json()["queue_running"] == []
    assert not [p for p in files_under(tmp / "output") if "job-cancel" in str(p)]


def test_a_failure_after_an_early_delivery_announced_to_no_one_leaves_nothing(emulator, s3):
    """Default mode, no listener: the first output was uploaded early, the job then failed; its object goes."""
    runtime, settings, _ = emulator
    set_faults(settings, delay_on_node={"6": 1.0}, error_on_node="6")
    result = asyncio.run(run_job({"id": "job-fail", "input": {
        "workflow": two_videos(), "output_config": {"storage": {"provider": "s3"}}}},
        runtime, with_s3(settings, s3), lambda p: None))
    assert runtime.drain(60)
    assert json.loads(result["error"])["code"] == "EXECUTION_ERROR"
    assert s3.keys() == []


def test_a_timeout_after_an_announced_output_keeps_it(emulator, s3):
    runtime, settings, _ = emulator
    set_faults(settings, delay_on_node={"6": 30.0})
    watcher = Watcher()
    result = asyncio.run(run_job({"id": "job-timeout", "input": {
        "workflow": two_videos(), "output_config": {"storage": {"provider": "s3"}},
        "execution_config": {"timeout": 3}}}, runtime, with_s3(settings, s3), lambda p: None, stream=watcher))
    assert runtime.drain(60)
    assert json.loads(result["error"])["code"] == "TIMEOUT"
    [announced] = watcher.outputs
    assert s3.keys() == [announced["object_key"]]


def test_auto_switches_to_storage_early_and_answers_as_a_whole_job_delivery(emulator, s3):
    """`auto` with outputs over INLINE_MAX_BYTES: uploaded as they come, and the result says so as before."""
    runtime, settings, _ = emulator
    set_faults(settings, delay_on_node={"6": 0.5})
    watcher = Watcher()
    result = asyncio.run(run_job({"id": "job-auto", "input": {"workflow": two_videos()}},
                                 runtime, with_s3(settings, s3, inline_max_bytes=1024 * 1024), lambda p: None,
                                 stream=watcher))
    runtime.drain()
    assert "error" not in result, result
    assert [o["storage"] for o in result["outputs"]] == ["s3", "s3"]
    assert [o["node_id"] for o in watcher.outputs] == ["3", "6"]
    [warning] = result["warnings"]
    assert "(INLINE_MAX_BYTES); delivered to s3" in warning


def test_a_key_template_with_index_delivers_everything_at_the_end(emulator, s3):
    runtime, settings, _ = emulator
    set_faults(settings, delay_on_node={"6": 0.5})
    seen: dict[str, Any] = {}
    watcher = Watcher(lambda chunk: seen.setdefault("keys", s3.keys()))
    result = asyncio.run(run_job({"id": "job-index", "input": {
        "workflow": two_videos(), "output_config": {"storage": {
            "provider": "s3", "key_template": "{job_id}/{index}-{filename}"}}}},
        runtime, with_s3(settings, s3), lambda p: None, stream=watcher))
    runtime.drain()
    assert [o["object_key"].split("/")[-1][:2] for o in result["outputs"]] == ["0-", "1-"]
    assert len(seen["keys"]) == 2  # announced once both were uploaded together, at the end
