"""One shape of `details` for each error code, whatever path fails the job: every code is produced through the
pipeline (FakeComfy) and its payload checked against docs/schema/error-payload.schema.json, which says each
code's shape; and "did you mean" for unknown node types, inputs and fields."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from comfy_worker.comfy.fake import FakeComfy
from comfy_worker.errors import ErrorCode
from comfy_worker.job import run_job
from comfy_worker.settings import Settings
from comfy_worker_dev import apispec

from .captures import capture
from .workerkit import empty_image_workflow

CATALOGUE = capture("object_info.json")
SCHEMA = json.loads(apispec.schema_path("error-payload").read_text())


def fail(job_input: Any, comfy: FakeComfy, settings: Settings | None = None) -> dict[str, Any]:
    result = asyncio.run(run_job({"id": "job-1", "input": job_input}, comfy, settings or Settings(), lambda p: None))
    assert "error" in result, f"expected a failure, got {json.dumps(result)[:300]}"
    return json.loads(result["error"])


def invert(class_type: str = "ImageInvert") -> dict[str, Any]:
    return {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
            "2": {"class_type": class_type, "inputs": {"image": ["1", 0]}},
            "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "x"}}}


def broken_ui_link() -> dict[str, Any]:
    """A UI workflow whose SaveImage input names a link that does not exist."""
    return {"last_node_id": 2, "last_link_id": 1, "version": 0.4, "links": [],
            "nodes": [{"id": 1, "type": "EmptyImage", "mode": 0, "inputs": [],
                       "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": []}], "widgets_values": [8, 8, 1, 0]},
                      {"id": 2, "type": "SaveImage", "mode": 0, "inputs": [{"name": "images", "type": "IMAGE",
                                                                             "link": 7}],
                       "outputs": [], "widgets_values": ["x"]}]}


class UnreadableOutputs(FakeComfy):
    def locate(self, ref, scratch):
        raise OSError("gone")


class BrokenCatalogue(FakeComfy):
    def catalogue(self):
        raise RuntimeError("a bug")


def _rule(fault: str):
    return lambda index, node_id, node: fault if node.get("class_type") == "ImageInvert" else None


def cases(tmp: Path) -> list[tuple[str, Any, FakeComfy, Settings | None]]:
    """(expected code, job input, ComfyUI, settings): each code through the path that gives it."""
    fake = lambda cls=FakeComfy, **kw: cls(CATALOGUE, root=tmp / str(len(list(tmp.iterdir()))), **kw)  # noqa: E731
    refused = fake()
    refused.refuse = {"error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed "
                                "validation", "details": "", "extra_info": {}},
                      "node_errors": {"2": {"errors": [{"type": "value_not_in_list", "message": "Value not in list",
                                                        "details": "x", "extra_info": {"input_name": "image"}}],
                                            "dependent_outputs": ["3"], "class_type": "ImageInvert"}}}
    down = fake()
    down.down = True
    missing_model = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "nope.safetensors"}},
                     "2": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
                     "3": {"class_type": "VAEDecode", "inputs": {"samples": ["2", 0], "vae": ["1", 2]}},
                     "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "x"}}}
    lora = {"1": {"class_type": "CreateHookLora", "inputs": {"lora_name": "x.safetensors", "strength_model": 1.0,
                                                             "strength_clip": 1.0}},
            "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}
    return [
        ("INVALID_INPUT", {"workflow": invert(), "imagez": []}, fake(), None),
        ("INVALID_WORKFLOW", {"workflow": invert("ImageInvertt")}, fake(), None),
        ("INVALID_WORKFLOW", {"workflow": broken_ui_link()}, fake(), None),
        ("INVALID_WORKFLOW", {"workflow": invert()}, refused, None),
        ("MISSING_MODELS", {"workflow": missing_model}, fake(), None),
        ("POLICY_VIOLATION", {"workflow": invert()}, fake(), Settings(node_denylist="ImageInvert")),
        ("EXECUTION_ERROR", {"workflow": invert()}, fake(rule=_rule("error")), None),
        ("OUT_OF_MEMORY", {"workflow": invert()}, fake(rule=_rule("oom")), None),
        ("TIMEOUT", {"workflow": invert(), "execution_config": {"timeout": 0.3}}, fake(rule=_rule("hang")), None),
        ("COMFYUI_UNAVAILABLE", {"workflow": invert()}, down, None),
        ("OUTPUT_TOO_LARGE", {"workflow": empty_image_workflow(), "output_config": {"storage": {"provider": "inline"}}},
         fake(), Settings(inline_max_bytes=1024)),
        ("UPLOAD_FAILED", {"workflow": empty_image_workflow(), "output_config": {"storage": {"provider": "gdrive"}}},
         fake(), Settings(gdrive_credentials="not a key")),
        ("INPUT_FETCH_FAILED", {"workflow": invert(), "images": [{"name": "a.png", "image": "https://127.0.0.1:9/a.png"}]},
         fake(), Settings(allow_private_urls=True, input_fetch_timeout=2)),
        ("OUTPUT_MISSING", {"workflow": empty_image_workflow()}, fake(UnreadableOutputs), None),
        ("MODEL_FETCH_FAILED", {"workflow": lora, "models": [{"url": "https://example.com/x.safetensors",
                                                             "folder": "loras"}]}, fake(), None),
        ("INTERNAL_ERROR", {"workflow": invert()}, fake(BrokenCatalogue), None),
    ]


def test_every_code_has_its_one_shape(tmp_path):
    seen = set()
    for code, job_input, comfy, settings in cases(tmp_path):
        payload = fail(job_input, comfy, settings)
        assert payload["code"] == code, payload
        jsonschema.validate(payload, SCHEMA)
        seen.add(code)
    # Codes no pipeline test reaches here (CANCELLED needs the SDK's cancel) are checked in test_cancelled_shape.
    assert seen | {"CANCELLED"} == {code.value for code in ErrorCode}


def test_cancelled_shape():
    from comfy_worker.comfy.failures import history_error

    entry = {"status": {"status_str": "error", "completed": False, "messages": [
        ["execution_interrupted", {"node_id": "2", "node_type": "KSampler"}]]}}
    err = history_error(entry, invert())
    assert err is not None and err.code is ErrorCode.CANCELLED
    jsonschema.validate(err.payload("job-1"), SCHEMA)


def test_the_schema_refuses_a_details_of_another_shape():
    wrong = {"code": "INVALID_WORKFLOW", "message": "m", "retryable": False, "details": {"items": []}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(wrong, SCHEMA)


def test_unknown_node_type_suggests_the_installed_one(tmp_path):
    payload = fail({"workflow": invert("ImageInvertt")}, FakeComfy(CATALOGUE, root=tmp_path))
    [found] = payload["details"]["problems"]
    assert found["suggestion"] == "ImageInvert" and found["node_id"] == "2"
    assert "did you mean 'ImageInvert'?" in found["message"] and "did you mean 'ImageInvert'?" in payload["message"]


def test_unknown_node_type_far_from_any_gets_no_suggestion(tmp_path):
    payload = fail({"workflow": invert("FancyUpscalerXYZ")}, FakeComfy(CATALOGUE, root=tmp_path))
    assert "suggestion" not in payload["details"]["problems"][0]


def test_unknown_input_in_inputs_suggests_the_known_one(tmp_path):
    payload = fail({"workflow": invert(), "inputs": {"1.widht": 16}}, FakeComfy(CATALOGUE, root=tmp_path))
    [entry] = payload["details"]["errors"]
    assert entry["field"] == "inputs.1.widht" and entry["suggestion"] == "inputs.1.width"
    assert "did you mean 'width'?" in entry["problem"]


def test_unknown_node_title_in_inputs_suggests_the_known_one(tmp_path):
    workflow = invert()
    workflow["1"]["_meta"] = {"title": "Background"}
    payload = fail({"workflow": workflow, "inputs": {"Backgruond.width": 16}}, FakeComfy(CATALOGUE, root=tmp_path))
    [entry] = payload["details"]["errors"]
    assert entry["suggestion"] == "inputs.Background.width"


def test_a_batch_whose_items_all_failed_keeps_the_shape_of_its_code(tmp_path):
    comfy = FakeComfy(CATALOGUE, root=tmp_path, rule=_rule("error"))
    payload = fail({"workflow": invert(), "inputs": [{"1.color": 1}, {"1.color": 2}]}, comfy)
    assert payload["code"] == "EXECUTION_ERROR" and len(payload["details"]["items"]) == 2
    jsonschema.validate(payload, SCHEMA)
