"""Pre-flight validation: agreement with ComfyUI's recorded answers, and what ComfyUI misses."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from comfy_worker.errors import ErrorCode, WorkerError
from comfy_worker.workflow import Policy, dry_run, expand_batch, preflight, resolve_workflow
from comfy_worker.workflow.overrides import apply_inputs, randomize_seeds
from comfy_worker_dev.emulator.catalogue import OBJECT_INFO_PATH

FIX = Path(__file__).parent / "fixtures" / "comfyui"
OI = json.loads(OBJECT_INFO_PATH.read_text())
CASES = sorted(p.name[: -len("_response.json")] for p in FIX.glob("err_*_response.json")
               if (FIX / p.name.replace("_response", "_request")).exists())


def _prompt(case: str):
    req = json.loads((FIX / f"{case}_request.json").read_text())
    body = req.get("json", req)
    return body.get("prompt") if isinstance(body, dict) else None


@pytest.mark.parametrize("case", CASES)
def test_agrees_with_comfyui_on_rejected_graphs(case: str) -> None:
    answer = json.loads((FIX / f"{case}_response.json").read_text())
    prompt = _prompt(case)
    if answer["status"] != 400 or not isinstance(prompt, dict):
        pytest.skip("not a validation answer about a graph")
    report = preflight(prompt, OI, None, input_files=[])
    assert not report.ok
    error = answer["json"]["error"]
    if error["type"] == "missing_node_type":
        assert error["extra_info"]["node_id"] in {m["node_id"] for m in report.missing_nodes}
    elif error["type"] == "prompt_no_outputs":
        assert "prompt_no_outputs" in {e["type"] for e in report.graph_errors}
    for node_id, entry in answer["json"]["node_errors"].items():
        ours = report.node_errors[node_id]
        assert ours["class_type"] == entry["class_type"]
        assert {e["type"] for e in entry["errors"]} <= {e["type"] for e in ours["errors"]}
        assert ours["dependent_outputs"] == entry["dependent_outputs"]


def _good():
    return {"1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
            "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}, "_meta": {"title": "Invert.v2"}},
            "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "x"}}}


def test_valid_graph_passes() -> None:
    assert preflight(_good(), OI).ok


def test_three_problems_one_error() -> None:
    g = _good()
    g["1"]["inputs"]["width"] = 0                       # below min
    g["2"]["inputs"]["image"] = ["1", 5]                # EmptyImage has one output
    g["4"] = {"class_type": "NoSuchNode", "inputs": {}}  # unknown type
    with pytest.raises(WorkerError) as info:
        preflight(g, OI).raise_for_errors()
    err = info.value
    assert err.code is ErrorCode.INVALID_WORKFLOW
    assert err.details["missing_nodes"][0]["node_id"] == "4"
    assert err.details["node_errors"]["2"]["errors"][0]["type"] == "exception_during_inner_validation"
    assert err.details["node_errors"]["1"]["errors"][0]["type"] == "value_smaller_than_min"
    assert "NoSuchNode" in err.message and "node 2" in err.message and "node 1" in err.message


def test_every_error_kind() -> None:
    g = _good()
    g["1"]["inputs"].update(width="wide", height=10 ** 9)
    g["5"] = {"class_type": "KSampler", "inputs": {"seed": 1, "steps": 1, "cfg": 1, "sampler_name": "nope",
                                                    "scheduler": "normal", "denoise": 1, "model": [4, 0],
                                                    "positive": ["1", 0], "negative": ["1", 0, 1]}}
    g["6"] = {"class_type": "PreviewImage", "inputs": {"images": ["5", 0]}}
    g["7"] = {"class_type": "SaveImageWebsocket", "inputs": {"images": ["8", 0]}} if "SaveImageWebsocket" in OI else {
        "class_type": "PreviewImage", "inputs": {"images": ["8", 0]}}
    g["8"] = {"class_type": "ImageInvert", "inputs": {"image": ["9", 0]}}
    g["9"] = {"class_type": "ImageInvert", "inputs": {"image": ["8", 0]}}
    report = preflight(g, OI)
    kinds = {e["type"] for entry in report.node_errors.values() for e in entry["errors"]}
    assert {"invalid_input_type", "value_bigger_than_max", "value_not_in_list", "bad_linked_input",
            "return_type_mismatch", "required_input_missing", "exception_during_inner_validation",
            "dependency_cycle"} <= kinds
    assert report.invalid_connections and report.invalid_values


def test_boolean_given_as_string_is_caught() -> None:
    g = {"1": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
         "2": {"class_type": "SaveLatent", "inputs": {"samples": ["1", 0], "filename_prefix": "x"}}}
    assert preflight(g, OI).ok
    name = next((n for n, i in OI.items() if i.get("output_node") and any(
        c[0] == "BOOLEAN" for c in i["input"].get("required", {}).values())), None)
    if name is None:
        pytest.skip("no output node with a BOOLEAN input")
    spec = OI[name]["input"]["required"]
    inputs = {k: "false" if c[0] == "BOOLEAN" else None for k, c in spec.items()}
    report = preflight({"1": {"class_type": name, "inputs": inputs}}, OI)
    assert any(e["type"] == "invalid_input_type" and "'false'" in e["details"]
               for e in report.node_errors["1"]["errors"])


def _sd():
    req = json.loads((FIX / "sd_txt2img_run1_request.json").read_text())
    return req.get("json", req)["prompt"]


def test_missing_models_with_closest_names() -> None:
    g = _sd()
    ckpt = next(n for n in g.values() if n["class_type"] == "CheckpointLoaderSimple")
    ckpt["inputs"]["ckpt_name"] = "v1-5-pruned-emaonly.safetensors"
    models = {"checkpoints": ["v1-5-pruned-emaonly-fp16.safetensors", "sdxl_base.safetensors"]}
    with pytest.raises(WorkerError) as info:
        preflight(g, OI, models).raise_for_errors()
    assert info.value.code is ErrorCode.MISSING_MODELS
    missing = info.value.details["missing_models"][0]
    assert missing["folder"] == "checkpoints" and missing["closest"][0] == "v1-5-pruned-emaonly-fp16.safetensors"
    ckpt["inputs"]["ckpt_name"] = "sdxl_base.safetensors"
    assert preflight(g, OI, models).ok  # the live list wins over the catalogue's stale options


def test_load_image_checked_against_files_not_catalogue() -> None:
    g = {"1": {"class_type": "LoadImage", "inputs": {"image": "mine.png"}},
         "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}}}
    assert preflight(g, OI).ok
    assert preflight(g, OI, staged_files=["mine.png"]).ok
    report = preflight(g, OI, input_files=["other.png"])
    assert report.node_errors["1"]["errors"][0]["type"] == "custom_validation_failed"


def test_policy_violations() -> None:
    g = _good()
    g["3"]["inputs"]["filename_prefix"] = "../../etc/x"
    with pytest.raises(WorkerError) as info:
        preflight(g, OI, policy=Policy(node_denylist=frozenset({"ImageInvert"}), max_pixels=100)).raise_for_errors()
    assert info.value.code is ErrorCode.POLICY_VIOLATION
    rules = {v["rule"] for v in info.value.details["policy_violations"]}
    assert rules == {"PATH_ESCAPE", "NODE_DENYLIST", "MAX_PIXELS"}
    assert any(v["node_id"] == "3" for v in info.value.details["policy_violations"])
    for bad in ("/abs/x.png", "C:\\x.png", "a/../../b"):
        g = {"1": {"class_type": "LoadImage", "inputs": {"image": bad}},
             "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}}}
        assert preflight(g, OI).policy_violations


def test_output_nodes() -> None:
    g = _good()
    g["4"] = {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}}
    assert preflight(g, OI, output_nodes=["4"]).output_nodes == ["4"]
    assert not preflight(g, OI, output_nodes=["2"]).ok
    assert not preflight(g, OI, output_nodes=["77"]).ok


def test_inputs_by_id_and_dotted_title() -> None:
    g, media = apply_inputs(_good(), {"1.width": 128, "Invert.v2.image": ["1", 0],
                                      "3.filename_prefix": "out"}, OI)
    assert g["1"]["inputs"]["width"] == 128 and g["3"]["inputs"]["filename_prefix"] == "out"
    assert media == []
    with pytest.raises(WorkerError) as info:
        apply_inputs(_good(), {"1.nope": 1}, OI)
    assert info.value.code is ErrorCode.INVALID_INPUT and "1.nope" in info.value.message
    with pytest.raises(WorkerError):
        apply_inputs(_good(), {"Nobody.width": 1}, OI)
    dup = _good()
    dup["1"]["_meta"] = {"title": "Same"}
    dup["3"]["_meta"] = {"title": "Same"}
    with pytest.raises(WorkerError) as info:
        apply_inputs(dup, {"Same.width": 1}, OI)
    assert info.value.details["errors"][0]["node_ids"] == ["1", "3"]


def test_media_slots_say_what_their_input_loads() -> None:
    g = {"1": {"class_type": "LoadImage", "inputs": {"image": "x.png"}, "_meta": {"title": "Photo"}},
         "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}}}
    g2, media = apply_inputs(g, {"Photo.image": "https://example.com/a.png"}, OI)
    assert [(m.node_id, m.input_name, m.kind) for m in media] == [("1", "image", "image")]
    assert g2["1"]["inputs"]["image"] == "https://example.com/a.png"
    assert g["1"]["inputs"]["image"] == "x.png"  # the request's graph is untouched


def test_randomize_seeds_within_range() -> None:
    g = _sd()
    seeds = randomize_seeds(g, OI, random.Random(1))
    assert seeds
    for key, value in seeds.items():
        node_id, name = key.split(".")
        assert g[node_id]["inputs"][name] == value and 0 <= value <= 0xFFFFFFFFFFFFFFFF


def test_dry_run_and_batches() -> None:
    out = dry_run(_good(), OI, inputs={"1.width": 0})
    assert out["workflow"]["1"]["inputs"]["width"] == 0 and not out["preflight"]["ok"]
    runs = expand_batch(_good(), [{"1.width": 32}, {"1.width": 48}], OI)
    assert [r.graph["1"]["inputs"]["width"] for r in runs] == [32, 48]
    with pytest.raises(WorkerError) as info:
        expand_batch(_good(), [{"1.width": 32}, {"1.width": -5}], OI)
    assert info.value.details["items"][0]["index"] == 1
    resolved = resolve_workflow(_good(), OI, randomize=True, output_nodes=["3"])
    assert resolved.output_nodes == ["3"]


def test_loader_choices_that_are_not_files_stay_valid_with_live_model_lists() -> None:
    graph = {"1": {"class_type": "VAELoader", "inputs": {"vae_name": "pixel_space"}},
             "2": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["1", 0]}},
             "3": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
             "4": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}}}
    info = {**OI, "VAELoader": {**OI["VAELoader"],
                                         "input": {"required": {"vae_name": [["pixel_space", "old.safetensors"]]}}}}
    assert preflight(graph, info, {"vae": []}).ok
    graph["1"]["inputs"]["vae_name"] = "old.safetensors"  # a file the catalogue still lists, since deleted
    assert preflight(graph, info, {"vae": []}).missing_models
