"""The job pipeline on the in-process FakeComfy: every stage, no server, no process, milliseconds a test."""

from __future__ import annotations

import asyncio
import base64
import copy
import io
import json
import threading
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from comfy_worker.comfy.fake import FakeComfy
from comfy_worker.job import run_job
from comfy_worker.settings import Settings
from comfy_worker.workflow import JOB_MARKER_INPUT

from .captures import capture
from .workerkit import empty_image_workflow, png_b64

CATALOGUE = capture("object_info.json")


@pytest.fixture
def comfy(tmp_path: Path) -> FakeComfy:
    return FakeComfy(CATALOGUE, root=tmp_path / "comfyui")


def run(comfy: FakeComfy, job_input: Any, settings: Settings | None = None, job_id: str = "job-1",
        progress: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    sink = progress.append if progress is not None else (lambda payload: None)
    return asyncio.run(run_job({"id": job_id, "input": job_input}, comfy, settings or Settings(), sink))


def error_of(result: dict[str, Any]) -> dict[str, Any]:
    assert "error" in result, f"expected a failure, got {json.dumps(result)[:300]}"
    return json.loads(result["error"])


def invert(image: str = "in.png") -> dict[str, Any]:
    return {"1": {"class_type": "LoadImage", "inputs": {"image": image}},
            "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
            "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "out"}}}


def test_a_job_runs_one_prompt_and_returns_its_image(comfy: FakeComfy):
    progress: list[dict[str, Any]] = []
    result = run(comfy, {"workflow": empty_image_workflow()}, progress=progress)
    assert "error" not in result, result
    [(prompt_id, graph, _)] = comfy.submitted
    assert result["prompt_id"] == prompt_id
    [entry] = result["outputs"]
    assert entry["node_id"] == "2" and entry["kind"] == "image" and entry["width"] == 8
    # The image's base64 travels once: in the compatible `images` list, which its entry points to.
    assert "data" not in entry and entry["data_in"] == "images[0]"
    [image] = result["images"]
    assert image["type"] == "base64" and image["filename"] == entry["filename"]
    with Image.open(io.BytesIO(base64.b64decode(image["data"]))) as img:
        assert img.size == (8, 8)
    # The graph ComfyUI got writes into the job's own folder and carries its marker; nothing else changed.
    save = graph["2"]["inputs"]
    assert save["filename_prefix"].startswith("worker-jobs/job-1-") and save[JOB_MARKER_INPUT]
    assert graph["1"] == empty_image_workflow()["1"]
    percents = [p["percent"] for p in progress]
    assert percents == sorted(percents) and progress[-1]["prompt_id"] == prompt_id
    assert set(result["timings"]) >= {"parse", "wait_comfyui", "preflight", "submit", "execute", "collect",
                                      "deliver", "total"}
    [files] = comfy.cleaned
    assert files.prompt_ids == [prompt_id] and files.subfolders[0].startswith("worker-jobs/job-1-")


def test_the_callers_workflow_is_never_changed(comfy: FakeComfy):
    workflow = invert()
    before = copy.deepcopy(workflow)
    run(comfy, {"workflow": workflow, "images": [{"name": "in.png", "image": png_b64()}],
                "inputs": {"3.filename_prefix": "renamed"}})
    assert workflow == before


def test_images_are_staged_under_their_names_and_the_graph_points_at_them(comfy: FakeComfy):
    result = run(comfy, {"workflow": invert(), "images": [{"name": "in.png", "image": png_b64()}]})
    assert "error" not in result, result
    [(reference, data)] = comfy.uploads.items()
    assert reference.startswith("worker-jobs/job-1-") and reference.endswith("/in.png")
    assert data == base64.b64decode(png_b64())
    [(_, graph, _)] = comfy.submitted
    assert graph["1"]["inputs"]["image"] == reference


def test_media_given_in_inputs_is_staged_for_its_slot(comfy: FakeComfy):
    result = run(comfy, {"workflow": invert("placeholder.png"),
                         "inputs": {"1.image": f"data:image/png;base64,{png_b64()}"}})
    assert "error" not in result, result
    [reference] = comfy.uploads
    assert reference.endswith("/input-0-0.png")
    assert comfy.submitted[0][1]["1"]["inputs"]["image"] == reference


def test_a_bad_graph_is_refused_before_anything_is_uploaded_or_run(comfy: FakeComfy):
    workflow = invert()
    workflow["2"]["class_type"] = "ImageInvertt"
    err = error_of(run(comfy, {"workflow": workflow, "images": [{"name": "in.png", "image": png_b64()}]}))
    assert err["code"] == "INVALID_WORKFLOW"
    assert [p["node_id"] for p in err["details"]["problems"]] == ["2"]
    assert comfy.uploads == {} and comfy.submitted == []


def test_comfyuis_refusal_names_the_node(comfy: FakeComfy):
    comfy.refuse = {"error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed",
                              "details": "", "extra_info": {}},
                    "node_errors": {"1": {"class_type": "EmptyImage", "dependent_outputs": ["2"],
                                          "errors": [{"type": "value_bigger_than_max", "message": "too big",
                                                      "details": "width", "extra_info": {"input_name": "width"}}]}}}
    err = error_of(run(comfy, {"workflow": empty_image_workflow()}))
    assert err["code"] == "INVALID_WORKFLOW" and err["details"]["source"] == "comfyui"
    assert err["details"]["problems"][0]["input_name"] == "width"


def test_a_failing_node_is_an_execution_error_naming_it(tmp_path: Path):
    comfy = FakeComfy(CATALOGUE, root=tmp_path, rule=lambda i, node_id, node: "error" if node_id == "1" else None)
    err = error_of(run(comfy, {"workflow": empty_image_workflow()}))
    assert err["code"] == "EXECUTION_ERROR" and err["details"]["node_id"] == "1"
    assert err["details"]["class_type"] == "EmptyImage"


def test_out_of_memory_is_run_again_after_free(tmp_path: Path):
    comfy = FakeComfy(CATALOGUE, root=tmp_path, rule=lambda i, node_id, node: "oom" if node_id == "1" else None)
    comfy.oom_until_free = True
    result = run(comfy, {"workflow": empty_image_workflow()})
    assert "error" not in result, result
    assert comfy.freed == 1 and len(comfy.submitted) == 2
    assert any("ran out of GPU memory once" in w for w in result["warnings"])
    # Both prompts' history entries are removed afterwards.
    assert comfy.cleaned[0].prompt_ids == [comfy.submitted[0][0], comfy.submitted[1][0]]


def test_out_of_memory_twice_says_what_was_tried(tmp_path: Path):
    comfy = FakeComfy(CATALOGUE, root=tmp_path, rule=lambda i, node_id, node: "oom" if node_id == "1" else None)
    err = error_of(run(comfy, {"workflow": empty_image_workflow()}))
    assert err["code"] == "OUT_OF_MEMORY" and err["retryable"] is False and err["details"]["retried"] is True
    assert comfy.freed == 1


def test_a_batch_keeps_the_items_that_worked(tmp_path: Path):
    comfy = FakeComfy(CATALOGUE, root=tmp_path, rule=lambda i, node_id, node: "error" if i == 1 and node_id == "1"
                      else None)
    result = run(comfy, {"workflow": empty_image_workflow(), "inputs": [{"1.color": c} for c in (1, 2, 3)]})
    assert "error" not in result, result
    assert [item["status"] for item in result["items"]] == ["COMPLETED", "FAILED", "COMPLETED"]
    assert [o["item"] for o in result["outputs"]] == [0, 2]
    assert any(w.startswith("item 1 failed: EXECUTION_ERROR") for w in result["warnings"])


def test_a_batch_whose_items_all_fail_names_each(tmp_path: Path):
    comfy = FakeComfy(CATALOGUE, root=tmp_path, rule=lambda i, node_id, node: "error" if node_id == "1" else None)
    err = error_of(run(comfy, {"workflow": empty_image_workflow(), "inputs": [{"1.color": 1}, {"1.color": 2}]}))
    assert err["code"] == "EXECUTION_ERROR" and err["message"].startswith("all 2 items of the batch failed")
    assert [item["index"] for item in err["details"]["items"]] == [0, 1]


def test_a_dry_run_runs_nothing(comfy: FakeComfy):
    result = run(comfy, {"workflow": empty_image_workflow(), "execution_config": {"dry_run": True}})
    assert result["dry_run"] is True and result["preflight"]["ok"] is True
    assert result["workflow"] == empty_image_workflow()  # the graph as resolved, before the job's isolation
    assert comfy.submitted == []


def test_a_timeout_stops_the_prompt_and_says_so(tmp_path: Path):
    comfy = FakeComfy(CATALOGUE, root=tmp_path, rule=lambda i, node_id, node: "hang" if node_id == "1" else None)
    err = error_of(run(comfy, {"workflow": empty_image_workflow(), "execution_config": {"timeout": 0.3}}))
    assert err["code"] == "TIMEOUT" and err["details"]["timeout"] == 0.3
    [(stopped, settle)] = comfy.cancelled
    assert stopped == [comfy.submitted[0][0]] and settle is True
    assert err["details"]["prompt_ids"] == stopped  # the prompts it stopped, named


def test_a_cancelled_job_stops_its_prompt_and_leaves_the_wait_to_cleanup(tmp_path: Path):
    comfy = FakeComfy(CATALOGUE, root=tmp_path, rule=lambda i, node_id, node: "hang" if node_id == "1" else None)

    async def scenario() -> None:
        task = asyncio.create_task(run_job({"id": "c", "input": {"workflow": empty_image_workflow()}}, comfy,
                                           Settings(), lambda payload: None))
        while not comfy.submitted:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert comfy.cancelled == [([comfy.submitted[0][0]], False)]
    assert comfy.cleaned[0].unsettled == [comfy.submitted[0][0]]


def test_a_cancel_while_the_prompt_is_being_posted_stops_it_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """ComfyUI may queue the prompt although the POST has not answered yet: the cancel must still name it."""
    comfy = FakeComfy(CATALOGUE, root=tmp_path)
    posting, release = threading.Event(), threading.Event()

    def slow_submit(prompt_id, graph, output_nodes, extra_data=None):
        posting.set()
        release.wait(5)
        return []

    monkeypatch.setattr(comfy, "submit", slow_submit)

    async def scenario() -> None:
        task = asyncio.create_task(run_job({"id": "p", "input": {"workflow": empty_image_workflow()}}, comfy,
                                           Settings(), lambda payload: None))
        while not posting.is_set():
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        release.set()  # the POST answers after the cancel

    try:
        asyncio.run(scenario())
    finally:
        release.set()
    [(stopped, settle)] = comfy.cancelled
    assert len(stopped) == 1 and settle is False
    assert comfy.cleaned[0].unsettled == stopped and comfy.cleaned[0].prompt_ids == stopped


def test_comfyui_not_answering_fails_fast(comfy: FakeComfy):
    comfy.down = True
    err = error_of(run(comfy, {"workflow": empty_image_workflow()}))
    assert err["code"] == "COMFYUI_UNAVAILABLE" and comfy.submitted == []


def test_an_output_file_that_is_gone_is_output_missing(comfy: FakeComfy, monkeypatch: pytest.MonkeyPatch):
    def gone(ref, scratch):
        raise FileNotFoundError(ref.filename)

    monkeypatch.setattr(comfy, "locate", gone)
    err = error_of(run(comfy, {"workflow": empty_image_workflow()}))
    assert err["code"] == "OUTPUT_MISSING" and err["details"]["missing"][0]["node_id"] == "2"


def test_a_bad_s3config_is_refused_before_anything_runs(comfy: FakeComfy):
    result = asyncio.run(run_job({"id": "s", "input": {"workflow": empty_image_workflow()},
                                  "s3Config": {"accessId": "a"}}, comfy, Settings(), lambda payload: None))
    err = error_of(result)
    assert err["code"] == "INVALID_INPUT" and err["details"]["errors"][0]["field"] == "s3Config.accessSecret"
    assert comfy.submitted == []


def test_every_log_line_of_a_job_names_it(comfy: FakeComfy, caplog: pytest.LogCaptureFixture):
    from comfy_worker.logs import JobIdFilter

    caplog.handler.addFilter(JobIdFilter())
    caplog.set_level("DEBUG")
    run(comfy, {"workflow": invert(), "images": [{"name": "in.png", "image": png_b64()}]}, job_id="job-xyz")
    worker_lines = [r for r in caplog.records if r.name.startswith("comfy_worker")]
    assert worker_lines and all(getattr(r, "job", "") == "job=job-xyz " for r in worker_lines), \
        [(r.name, r.getMessage()) for r in worker_lines if getattr(r, "job", "") != "job=job-xyz "]

