"""The pre-flight against a real ComfyUI: valid graphs and one mutation per error kind go to its
``POST /prompt``; wherever ComfyUI refuses a graph, the pre-flight must refuse it too and name the same
nodes. The cases ComfyUI lets through that the pre-flight refuses are listed in ``COMFYUI_MISSES``.

Also: a sample of the workflow templates, converted, draw no complaint from ComfyUI but missing model
files, exactly where the pre-flight finds them.

Runs only when COMFYUI_DIR points to a ComfyUI checkout (COMFYUI_PYTHON: its interpreter).
"""

from __future__ import annotations

import copy
import json
import os
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from comfy_worker.workflow import catalogue as cat
from comfy_worker.workflow import convert_ui_workflow, is_ui_workflow, preflight

pytestmark = [pytest.mark.real_comfyui,
              pytest.mark.skipif(not os.environ.get("COMFYUI_DIR"), reason="COMFYUI_DIR is not set")]

FIXTURES = Path(__file__).parent / "fixtures"
DRIFT = json.loads((FIXTURES / "workflow" / "template_version_drift.json").read_text())["templates"]


@pytest.fixture(scope="module")
def comfy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from tests.contract.conftest import real_comfyui

    with real_comfyui(tmp_path_factory.mktemp("comfy-real-validation")) as server:
        object_info = requests.get(server.url + "/object_info", timeout=60).json()
        folders = requests.get(server.url + "/models", timeout=10).json()
        models = {f: requests.get(f"{server.url}/models/{f}", timeout=10).json() for f in folders}
        yield {"url": server.url, "object_info": object_info, "models": models}


def _submit(url: str, graph: dict[str, Any]) -> tuple[bool, dict[str, Any]]:
    """Whether ComfyUI accepts the whole graph. It queues a graph when at least one output node is valid
    (answering 200 with the other outputs' node_errors); that counts as a refusal of the rest."""
    response = requests.post(url + "/prompt", json={"prompt": graph, "client_id": "real-validation"}, timeout=60)
    body = response.json()
    if response.status_code == 200:
        # Queued graphs would run: drop them so nothing runs longer than it must.
        requests.post(url + "/queue", json={"clear": True}, timeout=10)
        requests.post(url + "/interrupt", timeout=10)
        return not body.get("node_errors"), body
    assert response.status_code == 400, body
    return False, body


def _comfy_named(body: dict[str, Any]) -> set[str]:
    named = set(body.get("node_errors") or {})
    node_id = ((body.get("error") or {}).get("extra_info") or {}).get("node_id")
    if node_id is not None:
        named.add(str(node_id))
    return named


def _ours_named(report: Any) -> set[str]:
    return set(report.node_errors) | {m["node_id"] for m in report.missing_nodes}


# ------------------------------------------------------------------------------------------------
# The valid graph and its mutations


def _valid(object_info: dict[str, Any]) -> dict[str, Any]:
    stitch, _ = cat.widget_values(object_info["ImageStitch"], [])
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
        "2": {"class_type": "ImageScale", "inputs": {"image": ["1", 0], "upscale_method": "nearest-exact",
                                                     "width": 32, "height": 32, "crop": "disabled"}},
        "3": {"class_type": "ImageStitch", "inputs": {**stitch, "image1": ["2", 0], "match_image_size": True}},
        "5": {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 32, "height": 32}},
        "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}},
    }


def _set(node: str, name: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(graph: dict[str, Any]) -> None:
        graph[node]["inputs"][name] = value
    return mutate


def _drop(node: str, name: str) -> Callable[[dict[str, Any]], None]:
    def mutate(graph: dict[str, Any]) -> None:
        del graph[node]["inputs"][name]
    return mutate


def _class(node: str, class_type: str) -> Callable[[dict[str, Any]], None]:
    def mutate(graph: dict[str, Any]) -> None:
        graph[node]["class_type"] = class_type
    return mutate


def _cycle(graph: dict[str, Any]) -> None:
    graph["2"]["inputs"]["image"] = ["3", 0]


def _no_output(graph: dict[str, Any]) -> None:
    del graph["4"]


def _second_output(graph: dict[str, Any]) -> None:
    graph["6"] = {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}


# name -> mutation. Each refused one is compared with ComfyUI's answer.
CASES: dict[str, Callable[[dict[str, Any]], None] | None] = {
    "valid": None,
    "valid_two_outputs": _second_output,
    "unknown_class_type": _class("2", "NoSuchNodeType"),
    "link_to_missing_node": _set("3", "image1", ["99", 0]),
    "bad_output_slot": _set("3", "image1", ["2", 5]),
    "type_mismatch": _set("3", "image1", ["5", 0]),
    "missing_required_input": _drop("1", "width"),
    "smaller_than_min": _set("1", "width", 0),
    "bigger_than_max": _set("2", "height", 999999),
    "not_in_list": _set("2", "upscale_method", "no-such-method"),
    "string_for_int": _set("1", "height", "tall"),
    "string_false_for_boolean": _set("3", "match_image_size", "false"),
    "link_source_as_number": _set("3", "image1", [2, 0]),
    "dependency_cycle": _cycle,
    "no_output_node": _no_output,
    "error_only_in_unused_branch": _set("5", "width", 0),
}
# Refused by the pre-flight, let through by ComfyUI's validation: it reads the string "false" as True.
COMFYUI_MISSES = {"string_false_for_boolean"}


@pytest.mark.parametrize("case", list(CASES))
def test_preflight_agrees_with_comfyui(comfy: dict[str, Any], case: str) -> None:
    graph = _valid(comfy["object_info"])
    mutate = CASES[case]
    if mutate is not None:
        mutate(graph)
    report = preflight(copy.deepcopy(graph), comfy["object_info"], comfy["models"])
    accepted, body = _submit(comfy["url"], graph)
    if accepted:
        if case in COMFYUI_MISSES:
            assert not report.ok, "listed as caught by the pre-flight only, but the pre-flight accepts it"
        else:
            assert report.ok, report.summary()
        return
    assert case not in COMFYUI_MISSES, f"ComfyUI now refuses it: {body}"
    assert not report.ok, f"ComfyUI refuses it: {body}"
    assert _ours_named(report) == _comfy_named(body), (report.summary(), body)
    if not body.get("node_errors") and body.get("error", {}).get("type") == "prompt_no_outputs":
        assert [e["type"] for e in report.graph_errors] == ["prompt_no_outputs"]
    for node_id, entry in body.get("node_errors", {}).items():
        ours = {e["type"] for e in report.node_errors[node_id]["errors"]}
        theirs = {e["type"] for e in entry["errors"]}
        assert ours == theirs, (node_id, ours, theirs)


# ------------------------------------------------------------------------------------------------
# Converted templates: only the model files are missing


def _template_sample(object_info: dict[str, Any], count: int = 40) -> list[Path]:
    pkg = pytest.importorskip("comfyui_workflow_templates_json")
    candidates = []
    for path in sorted((Path(pkg.__file__).parent / "templates").glob("*.json")):
        if path.stem in DRIFT:
            continue
        ui = json.loads(path.read_text())
        if not is_ui_workflow(ui):
            continue
        api = convert_ui_workflow(ui, object_info, rng=random.Random(0))
        report = preflight(api, object_info, {})
        # Only graphs that need model files and read no input files: ComfyUI refuses them before
        # running anything, and the only thing it can complain about is the models.
        if report.missing_nodes or not report.missing_models:
            continue
        if any(spec.upload_kind for node in api.values() if node["class_type"] in object_info
               for spec in cat.declared_inputs(object_info[node["class_type"]])):
            continue
        candidates.append(path)
    step = max(1, len(candidates) // count)
    return candidates[::step][:count]


def test_converted_templates_lack_only_model_files(comfy: dict[str, Any]) -> None:
    object_info, models = comfy["object_info"], comfy["models"]
    sample = _template_sample(object_info)
    assert len(sample) >= 30
    for path in sample:
        api = convert_ui_workflow(json.loads(path.read_text()), object_info, rng=random.Random(0))
        report = preflight(api, object_info, models)
        accepted, body = _submit(comfy["url"], api)
        assert not accepted, path.stem
        theirs = {(node_id, err["type"], err["extra_info"].get("input_name"))
                  for node_id, entry in body.get("node_errors", {}).items() for err in entry["errors"]}
        assert theirs, (path.stem, body)
        assert {kind for _, kind, _ in theirs} == {"value_not_in_list"}, (path.stem, theirs)
        ours = {(m["node_id"], "value_not_in_list", m["input_name"]) for m in report.missing_models}
        # ComfyUI checks only the nodes its output nodes depend on, as the pre-flight does.
        assert theirs == ours, path.stem
        assert report.only_missing_models, (path.stem, report.summary())
