"""The whole job path through the worker: the emulator by default, a real ComfyUI too with COMFYUI_DIR."""

from __future__ import annotations

import base64
import io
import json

import pytest
from PIL import Image

from comfy_run import outputs_with_data

from .workerkit import (boot_runtime, empty_image_workflow, error_of, files_under, invert_workflow, png_b64,
                        real_comfyui, run)

TARGETS = ["emulator"] + (["real"] if real_comfyui() else [])


@pytest.fixture(scope="module", params=TARGETS)
def worker(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(f"worker-{request.param}")
    if request.param == "real":
        request.applymarker(pytest.mark.real_comfyui)
    runtime, settings = boot_runtime(tmp, real=request.param == "real")
    assert runtime.boot_error is None, runtime.boot_error
    yield runtime, settings, tmp
    runtime.shutdown()


def decode(entry) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(entry["data"])))


def test_image_in_transform_out(worker):
    runtime, settings, tmp = worker
    progress: list = []
    result = run(runtime, settings, {"workflow": invert_workflow(), "images": [{"name": "in.png",
                 "image": png_b64((32, 24), (10, 200, 30))}]}, progress=progress)
    assert "error" not in result, result
    [entry] = outputs_with_data(result)
    assert entry["node_id"] == "3" and entry["kind"] == "image" and entry["mime_type"] == "image/png"
    assert (entry["width"], entry["height"]) == (32, 24)
    img = decode(entry).convert("RGB")
    # ComfyUI works in float32 and truncates when saving: allow one level of rounding.
    assert all(abs(a - b) <= 1 for a, b in zip(img.getpixel((5, 5)), (245, 55, 225)))
    assert result["images"] == [{"filename": entry["filename"], "type": "base64", "data": entry["data"]}]
    assert set(result["timings"]) >= {"parse", "stage_inputs", "submit", "execute", "collect", "deliver", "total"}
    assert result["warnings"] == []


def test_job_leaves_nothing_behind(worker):
    runtime, settings, tmp = worker
    before_out = files_under(tmp / "output")
    result = run(runtime, settings, {"workflow": invert_workflow(), "images": [{"name": "in.png",
                 "image": png_b64()}]})
    assert "error" not in result
    assert files_under(tmp / "output") == before_out
    assert not [p for p in files_under(tmp / "input") if "worker-jobs" in str(p)]
    assert runtime.client.history(result["prompt_id"]) is None


def test_identical_jobs_each_get_their_output(worker):
    """ComfyUI's cache would replay the first job's (deleted) file; every job must get a real output."""
    runtime, settings, _ = worker
    wf = empty_image_workflow(color=0x00FF00)
    first = run(runtime, settings, {"workflow": wf}, job_id="same")
    second = run(runtime, settings, {"workflow": wf}, job_id="same")
    for result in (first, second):
        assert "error" not in result, result
        [entry] = outputs_with_data(result)
        assert decode(entry).convert("RGB").getpixel((0, 0)) == (0, 255, 0)
    # Same pixels; the files differ only in the prompt ComfyUI embeds in the PNG.
    assert decode(outputs_with_data(first)[0]).tobytes() == decode(outputs_with_data(second)[0]).tobytes()


def test_upstream_nodes_stay_cached(worker):
    runtime, settings, _ = worker
    wf = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 16, "batch_size": 1, "color": 7}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "c"}},
    }
    run(runtime, settings, {"workflow": wf})
    progress: list = []
    result = run(runtime, settings, {"workflow": wf}, progress=progress)
    assert "error" not in result
    # Only the output node ran again: of three nodes, one was runnable.
    assert progress and progress[-1]["nodes_total"] == 1


def test_unknown_node_type(worker):
    runtime, settings, _ = worker
    wf = empty_image_workflow()
    wf["7"] = {"class_type": "NoSuchNodeAnywhere", "inputs": {}}
    err = error_of(run(runtime, settings, {"workflow": wf}))
    assert err["code"] == "INVALID_WORKFLOW"
    assert err["details"]["problems"][0]["node_id"] == "7"
    assert err["details"]["problems"][0]["class_type"] == "NoSuchNodeAnywhere"
    assert "node 7 (NoSuchNodeAnywhere)" in err["message"]


def test_bad_value_names_node_and_input(worker):
    runtime, settings, _ = worker
    err = error_of(run(runtime, settings, {"workflow": empty_image_workflow(width=100000)}))
    assert err["code"] == "INVALID_WORKFLOW"
    [problem] = err["details"]["problems"]
    assert (problem["node_id"], problem["class_type"], problem["input_name"]) == ("1", "EmptyImage", "width")


def test_runtime_failure_names_node_class_and_message(worker):
    runtime, settings, _ = worker
    corrupt = base64.b64encode(base64.b64decode(png_b64())[:40]).decode()
    err = error_of(run(runtime, settings, {"workflow": invert_workflow(), "images": [{"name": "in.png",
                   "image": corrupt}]}))
    assert err["code"] == "EXECUTION_ERROR"
    assert err["details"]["node_id"] == "1" and err["details"]["class_type"] == "LoadImage"
    assert err["details"]["exception_type"]
    assert err["details"]["exception_message"]
    assert "node 1 (LoadImage)" in err["message"]


def test_temp_outputs_only_when_asked(worker):
    runtime, settings, tmp = worker
    wf = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 2, "color": 0}},
          "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}
    without = run(runtime, settings, {"workflow": wf})
    assert without["outputs"] == [] and "no outputs" in without["warnings"][0]
    with_temp = run(runtime, settings, {"workflow": wf, "output_config": {"include_temp": True}})
    assert [(o["type"], o["kind"]) for o in with_temp["outputs"]] == [("temp", "image"), ("temp", "image")]
    assert not files_under(tmp / "temp")


def test_invalid_input_never_reaches_comfyui(worker):
    runtime, settings, _ = worker
    err = error_of(run(runtime, settings, {"workflow": empty_image_workflow(), "images": [
        {"name": "in.png", "image": "!!!not base64!!!"}]}))
    assert err["code"] == "INVALID_INPUT"
    assert err["details"]["errors"][0]["field"] == "images[0].image"
    err = error_of(run(runtime, settings, {"workflow": {"1": {"inputs": {}}}}))
    assert err["code"] == "INVALID_WORKFLOW" and "class_type" in err["message"]


def test_dry_run_reports_problems_instead_of_failing(worker):
    runtime, settings, _ = worker
    wf = empty_image_workflow(width=100000)
    wf["9"] = {"class_type": "NoSuchNodeAnywhere", "inputs": {}}
    result = run(runtime, settings, {"workflow": wf, "execution_config": {"dry_run": True}})
    assert result["dry_run"] is True and result["preflight"]["ok"] is False
    kinds = {(p["node_id"], p["type"]) for p in result["preflight"]["problems"]}
    assert {("9", "missing_node_type"), ("1", "value_bigger_than_max")} <= kinds
    assert result["workflow"]["1"]["inputs"]["width"] == 100000


def test_three_problems_one_error_and_nothing_reaches_comfyui(worker):
    runtime, settings, tmp = worker
    uploads: list = []
    original_upload, original_queue = runtime.client.upload_image, runtime.client.queue_prompt
    runtime.client.upload_image = lambda *a, **k: uploads.append(a) or original_upload(*a, **k)
    runtime.client.queue_prompt = lambda *a, **k: uploads.append("prompt") or original_queue(*a, **k)
    try:
        wf = invert_workflow()
        wf["2"]["inputs"]["image"] = ["99", 0]                 # a link to a node that does not exist
        wf["6"] = {"class_type": "SaveImageNowhere", "inputs": {"images": ["1", 0]}}  # an unknown node type
        wf["4"] = {"class_type": "EmptyImage", "inputs": {"width": 0, "height": 8, "batch_size": 1, "color": 0}}
        wf["5"] = {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "x"}}  # width 0
        err = error_of(run(runtime, settings, {"workflow": wf, "images": [{"name": "in.png", "image": png_b64()}]}))
    finally:
        runtime.client.upload_image, runtime.client.queue_prompt = original_upload, original_queue
    assert err["code"] == "INVALID_WORKFLOW"
    found = {(p["node_id"], p["type"]) for p in err["details"]["problems"]}
    assert ("6", "missing_node_type") in found and ("4", "value_smaller_than_min") in found
    assert any(node == "2" for node, _ in found), found
    assert uploads == [], "nothing may be uploaded or queued before the graph is valid"


def test_a_512_png_travels_once_in_the_result(worker):
    """Each output's bytes once per result: the image's base64 in `images` (where worker-comfyui's clients
    read it), its `outputs` entry pointing there."""
    runtime, settings, _ = worker
    result = run(runtime, settings, {"workflow": empty_image_workflow(width=512, height=512)})
    [entry], [image] = result["outputs"], result["images"]
    assert (entry["width"], entry["height"]) == (512, 512) and entry["data_in"] == "images[0]"
    assert "data" not in entry and image["type"] == "base64"
    text = json.dumps(result)
    assert text.count(image["data"]) == 1 and len(text) < len(image["data"]) + 3000
