"""Batches: `inputs` as a list runs the graph once per set, validated first, outcomes grouped per item."""

from __future__ import annotations

import base64
import io

from PIL import Image

from comfy_run import outputs_with_data
from .workerkit import boot_runtime, empty_image_workflow, error_of, files_under, run


def pixel(entry) -> tuple[int, int, int]:
    return Image.open(io.BytesIO(base64.b64decode(entry["data"]))).convert("RGB").getpixel((0, 0))


def test_each_set_runs_and_outputs_are_grouped(tmp_path):
    runtime, settings = boot_runtime(tmp_path)
    try:
        wf = empty_image_workflow()
        progress: list = []
        result = run(runtime, settings, {"workflow": wf, "inputs": [{"1.color": 0xFF0000}, {"1.color": 0x00FF00},
                                                                    {"1.color": 0x0000FF}]}, progress=progress)
        assert "error" not in result, result
        assert [o["item"] for o in outputs_with_data(result)] == [0, 1, 2]
        assert [pixel(o) for o in outputs_with_data(result)] == [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
        assert [i["status"] for i in result["items"]] == ["COMPLETED"] * 3
        assert len({i["prompt_id"] for i in result["items"]}) == 3
        percents = [p["percent"] for p in progress]
        assert percents == sorted(percents) and all(p["items"] == 3 for p in progress)
        assert not [p for p in files_under(tmp_path / "output") if "worker-jobs" in str(p)]
    finally:
        runtime.shutdown()


def test_every_set_is_validated_before_anything_runs(tmp_path):
    runtime, settings = boot_runtime(tmp_path)
    try:
        err = error_of(run(runtime, settings, {"workflow": empty_image_workflow(),
                                               "inputs": [{"1.color": 1}, {"1.width": 999999}, {"9.nope": 1}]}))
        assert err["code"] in {"INVALID_WORKFLOW", "INVALID_INPUT"}
        assert [item["index"] for item in err["details"]["items"]] == [1, 2]
        assert runtime.client._json("GET", "/history") == {}
    finally:
        runtime.shutdown()


def test_one_failed_item_keeps_the_others(tmp_path):
    runtime, settings = boot_runtime(tmp_path)
    try:
        wf = {
            "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
            "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
            "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "b"}},
        }
        runtime.client._request("POST", "/__emulator__/faults", json={"error_on_node": "2"})
        # The fault hits node 2 in every prompt; width 8 vs 16 tells the items apart, so make item 1 skip it.
        result = run(runtime, settings, {"workflow": wf, "inputs": [{"1.color": 0}, {"3.images": ["1", 0]}]})
        assert "error" not in result, result
        assert [i["status"] for i in result["items"]] == ["FAILED", "COMPLETED"]
        assert result["items"][0]["error"]["code"] == "EXECUTION_ERROR"
        assert [o["item"] for o in outputs_with_data(result)] == [1]
        assert any("item 0 failed" in w for w in result["warnings"])
    finally:
        runtime.shutdown()


def test_batch_dry_run(tmp_path):
    runtime, settings = boot_runtime(tmp_path)
    try:
        result = run(runtime, settings, {"workflow": empty_image_workflow(), "inputs": [{"1.width": 8}, {"1.width": 9}],
                                         "execution_config": {"dry_run": True}})
        assert result["dry_run"] is True
        assert [i["workflow"]["1"]["inputs"]["width"] for i in result["items"]] == [8, 9]
        assert all(i["preflight"]["ok"] for i in result["items"])
    finally:
        runtime.shutdown()
