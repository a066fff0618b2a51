"""UI-format conversion: ComfyUI's own templates, and the web app's rules one by one."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from comfy_worker.errors import ErrorCode, WorkerError
from comfy_worker.workflow import convert_ui_workflow, is_ui_workflow, preflight, to_api_workflow
from comfy_worker_dev.emulator.catalogue import OBJECT_INFO_PATH

FIXTURES = Path(__file__).parent / "fixtures"
OBJECT_INFO = json.loads(OBJECT_INFO_PATH.read_text())
DRIFT = json.loads((FIXTURES / "workflow" / "template_version_drift.json").read_text())["templates"]

templates_pkg = pytest.importorskip("comfyui_workflow_templates_json")
TEMPLATE_DIR = Path(templates_pkg.__file__).parent / "templates"


def _ui_templates() -> list[Path]:
    out = []
    for path in sorted(TEMPLATE_DIR.glob("*.json")):
        data = json.loads(path.read_text())
        if is_ui_workflow(data):
            out.append(path)
    return out


TEMPLATES = _ui_templates()


def test_corpus_is_large_and_has_subgraphs() -> None:
    with_subgraphs = [p for p in TEMPLATES if json.loads(p.read_text()).get("definitions", {}).get("subgraphs")]
    assert len(TEMPLATES) > 500
    assert len(with_subgraphs) > 150


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.stem)
def test_template_converts_to_a_graph_comfyui_accepts(path: Path) -> None:
    ui = json.loads(path.read_text())
    if path.stem in DRIFT and DRIFT[path.stem].startswith("conversion:"):
        with pytest.raises(WorkerError) as info:
            convert_ui_workflow(ui, OBJECT_INFO)
        assert info.value.code is ErrorCode.INVALID_WORKFLOW and info.value.details["node_id"]
        return
    api = convert_ui_workflow(ui, OBJECT_INFO, rng=random.Random(0))
    assert api, "conversion produced no nodes"
    for node_id, node in api.items():
        assert set(node) == {"inputs", "class_type", "_meta"}
        for value in node["inputs"].values():
            if isinstance(value, list):
                assert len(value) == 2 and value[0] in api, (node_id, value)
    report = preflight(api, OBJECT_INFO, {})
    if report.missing_nodes:
        pytest.skip("uses node types this catalogue does not have")
    problems = [(nid, e["type"], e["details"]) for nid, entry in report.node_errors.items()
                for e in entry["errors"] if not e["extra_info"].get("missing_model")]
    problems += [(None, e["type"], e["message"]) for e in report.graph_errors]
    if path.stem in DRIFT:
        assert problems, "listed as drifted but now passes: remove it from template_version_drift.json"
        return
    assert not problems


# ------------------------------------------------------------------------------------------------
# Hand-built workflows for each rule


def _node(node_id, type_, widgets=None, inputs=(), outputs=(), mode=0, title=None, **extra):
    node = {"id": node_id, "type": type_, "mode": mode, "inputs": list(inputs), "outputs": list(outputs),
            "widgets_values": widgets if widgets is not None else [], "order": node_id, **extra}
    if title:
        node["title"] = title
    return node


def _txt2img(extra_nodes=(), extra_links=(), seed_link=None):
    nodes = [
        _node(4, "CheckpointLoaderSimple", ["sd15.safetensors"],
              outputs=[{"name": "MODEL", "type": "MODEL", "links": [1]}, {"name": "CLIP", "type": "CLIP", "links": [3, 5]},
                       {"name": "VAE", "type": "VAE", "links": [8]}]),
        _node(6, "CLIPTextEncode", ["a /* hidden */ fox // comment"], inputs=[{"name": "clip", "type": "CLIP", "link": 3}],
              outputs=[{"name": "CONDITIONING", "type": "CONDITIONING", "links": [4]}], title="Positive Prompt"),
        _node(7, "CLIPTextEncode", ["bad"], inputs=[{"name": "clip", "type": "CLIP", "link": 5}],
              outputs=[{"name": "CONDITIONING", "type": "CONDITIONING", "links": [6]}]),
        _node(5, "EmptyLatentImage", [512, 512, 1], outputs=[{"name": "LATENT", "type": "LATENT", "links": [2]}]),
        _node(3, "KSampler", [42, "randomize", 20, 8, "euler", "normal", 1],
              inputs=[{"name": "model", "type": "MODEL", "link": 1}, {"name": "positive", "type": "CONDITIONING", "link": 4},
                      {"name": "negative", "type": "CONDITIONING", "link": 6},
                      {"name": "latent_image", "type": "LATENT", "link": 2}]
              + ([{"name": "seed", "type": "INT", "widget": {"name": "seed"}, "link": seed_link}] if seed_link else []),
              outputs=[{"name": "LATENT", "type": "LATENT", "links": [7]}]),
        _node(8, "VAEDecode", inputs=[{"name": "samples", "type": "LATENT", "link": 7}, {"name": "vae", "type": "VAE", "link": 8}],
              outputs=[{"name": "IMAGE", "type": "IMAGE", "links": [9]}]),
        _node(9, "SaveImage", ["ComfyUI"], inputs=[{"name": "images", "type": "IMAGE", "link": 9}]),
        _node(10, "Note", ["just a note"]),
        *extra_nodes,
    ]
    links = [[1, 4, 0, 3, 0, "MODEL"], [2, 5, 0, 3, 3, "LATENT"], [3, 4, 1, 6, 0, "CLIP"], [4, 6, 0, 3, 1, "CONDITIONING"],
             [5, 4, 1, 7, 0, "CLIP"], [6, 7, 0, 3, 2, "CONDITIONING"], [7, 3, 0, 8, 0, "LATENT"], [8, 4, 2, 8, 1, "VAE"],
             [9, 8, 0, 9, 0, "IMAGE"], *extra_links]
    return {"last_node_id": 20, "last_link_id": 20, "nodes": nodes, "links": links, "version": 0.4, "extra": {}}


def test_basic_widgets_titles_and_links() -> None:
    api = convert_ui_workflow(_txt2img(), OBJECT_INFO)
    assert "10" not in api  # Note is frontend-only
    assert api["3"]["inputs"] == {"seed": 42, "steps": 20, "cfg": 8, "sampler_name": "euler", "scheduler": "normal",
                                  "denoise": 1, "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0],
                                  "latent_image": ["5", 0]}
    assert api["6"]["_meta"]["title"] == "Positive Prompt"
    assert api["4"]["_meta"]["title"] == "Load Checkpoint"  # display name when untitled
    assert api["6"]["inputs"]["text"] == "a  fox "  # dynamic prompt comments stripped
    assert preflight(api, OBJECT_INFO, {"checkpoints": ["sd15.safetensors"]}).ok


def test_primitive_node_value_reaches_its_target() -> None:
    primitive = _node(11, "PrimitiveNode", [1234, "fixed"],
                      outputs=[{"name": "INT", "type": "INT", "links": [11], "widget": {"name": "seed"}}])
    api = convert_ui_workflow(_txt2img([primitive], [[11, 11, 0, 3, 4, "INT"]], seed_link=11), OBJECT_INFO)
    assert "11" not in api
    assert api["3"]["inputs"]["seed"] == 1234


def test_reroute_bypass_and_mute() -> None:
    wf = _txt2img()
    # VAE goes through a legacy Reroute; a bypassed ImageInvert sits before SaveImage; a muted node is dropped.
    wf["nodes"].append(_node(12, "Reroute", inputs=[{"name": "", "type": "*", "link": 8}],
                             outputs=[{"name": "", "type": "VAE", "links": [12]}]))
    wf["nodes"].append(_node(13, "ImageInvert", inputs=[{"name": "image", "type": "IMAGE", "link": 9}],
                             outputs=[{"name": "IMAGE", "type": "IMAGE", "links": [13]}], mode=4))
    wf["nodes"].append(_node(14, "PreviewImage", inputs=[{"name": "images", "type": "IMAGE", "link": 14}], mode=2))
    wf["links"] = [link for link in wf["links"] if link[0] not in (8, 9)]
    wf["links"] += [[8, 4, 2, 12, 0, "VAE"], [12, 12, 0, 8, 1, "VAE"], [9, 8, 0, 13, 0, "IMAGE"],
                    [13, 13, 0, 9, 0, "IMAGE"], [14, 8, 0, 14, 0, "IMAGE"]]
    for node in wf["nodes"]:
        if node["id"] == 8:
            node["inputs"][1]["link"] = 12
        if node["id"] == 9:
            node["inputs"][0]["link"] = 13
    api = convert_ui_workflow(wf, OBJECT_INFO)
    assert api["8"]["inputs"]["vae"] == ["4", 2]
    assert api["9"]["inputs"]["images"] == ["8", 0]
    assert "12" not in api and "13" not in api and "14" not in api


def test_subgraph_with_promoted_widget_and_nested_ids() -> None:
    sub_id = "11111111-2222-3333-4444-555555555555"
    definition = {
        "id": sub_id, "name": "Invert twice", "version": 1,
        "inputNode": {"id": -10}, "outputNode": {"id": -20},
        "inputs": [{"id": "a", "name": "image", "type": "IMAGE", "linkIds": [1]},
                   {"id": "b", "name": "width", "type": "INT", "linkIds": [3]}],
        "outputs": [{"id": "c", "name": "IMAGE", "type": "IMAGE", "linkIds": [4]}],
        "widgets": [],
        "nodes": [
            {"id": 11, "type": "ImageScale", "mode": 0, "widgets_values": ["nearest-exact", 100, 64, "disabled"],
             "inputs": [{"name": "image", "type": "IMAGE", "link": 1},
                        {"name": "width", "type": "INT", "widget": {"name": "width"}, "link": 3}],
             "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [2]}]},
            {"id": 12, "type": "ImageInvert", "mode": 0, "inputs": [{"name": "image", "type": "IMAGE", "link": 2}],
             "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [4]}]},
        ],
        "links": [{"id": 1, "origin_id": -10, "origin_slot": 0, "target_id": 11, "target_slot": 0, "type": "IMAGE"},
                  {"id": 3, "origin_id": -10, "origin_slot": 1, "target_id": 11, "target_slot": 1, "type": "INT"},
                  {"id": 2, "origin_id": 11, "origin_slot": 0, "target_id": 12, "target_slot": 0, "type": "IMAGE"},
                  {"id": 4, "origin_id": 12, "origin_slot": 0, "target_id": -20, "target_slot": 0, "type": "IMAGE"}],
    }
    wf = {"version": 0.4, "definitions": {"subgraphs": [definition]}, "nodes": [
        _node(1, "EmptyImage", [64, 64, 1, 0], outputs=[{"name": "IMAGE", "type": "IMAGE", "links": [1]}]),
        _node(5, sub_id, [256], inputs=[{"name": "image", "type": "IMAGE", "link": 1},
                                        {"name": "width", "type": "INT", "widget": {"name": "width"}, "link": None}],
              outputs=[{"name": "IMAGE", "type": "IMAGE", "links": [2]}]),
        _node(9, "SaveImage", ["x"], inputs=[{"name": "images", "type": "IMAGE", "link": 2}]),
    ], "links": [[1, 1, 0, 5, 0, "IMAGE"], [2, 5, 0, 9, 0, "IMAGE"]]}
    api = convert_ui_workflow(wf, OBJECT_INFO)
    assert set(api) == {"1", "5:11", "5:12", "9"}
    assert api["5:11"]["inputs"]["image"] == ["1", 0]
    assert api["5:11"]["inputs"]["width"] == 256  # the instance's promoted widget wins
    assert api["5:12"]["inputs"]["image"] == ["5:11", 0]
    assert api["9"]["inputs"]["images"] == ["5:12", 0]
    assert preflight(api, OBJECT_INFO, {}).ok


def test_subgraph_node_ids_that_clash_are_renumbered_like_the_web_app() -> None:
    # Inner node 1 clashes with root node 1: the web app renumbers it to the next id after last_node_id,
    # and the queued id is the new one; inner node 2 is free and keeps its id.
    sub_id = "22222222-2222-3333-4444-555555555555"
    definition = {
        "id": sub_id, "name": "Invert", "version": 1, "inputNode": {"id": -10}, "outputNode": {"id": -20},
        "inputs": [{"id": "a", "name": "image", "type": "IMAGE", "linkIds": [1]}],
        "outputs": [{"id": "c", "name": "IMAGE", "type": "IMAGE", "linkIds": [3]}], "widgets": [],
        "nodes": [
            {"id": 1, "type": "ImageInvert", "mode": 0, "inputs": [{"name": "image", "type": "IMAGE", "link": 1}],
             "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [2]}]},
            {"id": 2, "type": "ImageInvert", "mode": 0, "inputs": [{"name": "image", "type": "IMAGE", "link": 2}],
             "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [3]}]},
        ],
        "links": [{"id": 1, "origin_id": -10, "origin_slot": 0, "target_id": 1, "target_slot": 0, "type": "IMAGE"},
                  {"id": 2, "origin_id": 1, "origin_slot": 0, "target_id": 2, "target_slot": 0, "type": "IMAGE"},
                  {"id": 3, "origin_id": 2, "origin_slot": 0, "target_id": -20, "target_slot": 0, "type": "IMAGE"}],
    }
    wf = {"version": 0.4, "last_node_id": 9, "definitions": {"subgraphs": [definition]}, "nodes": [
        _node(1, "EmptyImage", [64, 64, 1, 0], outputs=[{"name": "IMAGE", "type": "IMAGE", "links": [1]}]),
        _node(5, sub_id, [], inputs=[{"name": "image", "type": "IMAGE", "link": 1}],
              outputs=[{"name": "IMAGE", "type": "IMAGE", "links": [2]}]),
        _node(9, "SaveImage", ["x"], inputs=[{"name": "images", "type": "IMAGE", "link": 2}]),
    ], "links": [[1, 1, 0, 5, 0, "IMAGE"], [2, 5, 0, 9, 0, "IMAGE"]]}
    api = convert_ui_workflow(wf, OBJECT_INFO)
    assert set(api) == {"1", "5:10", "5:2", "9"}
    assert api["5:10"]["inputs"]["image"] == ["1", 0]
    assert api["5:2"]["inputs"]["image"] == ["5:10", 0]
    assert api["9"]["inputs"]["images"] == ["5:2", 0]


def test_conversion_error_names_the_node() -> None:
    wf = _txt2img()
    wf["nodes"][4]["inputs"][0]["link"] = 999
    with pytest.raises(WorkerError) as info:
        convert_ui_workflow(wf, OBJECT_INFO)
    assert info.value.code is ErrorCode.INVALID_WORKFLOW
    assert info.value.details["node_id"] == "3" and info.value.details["node_type"] == "KSampler"
    assert "999" in info.value.message


def test_api_format_passes_through() -> None:
    api = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8}}}
    assert not is_ui_workflow(api)
    assert to_api_workflow(api, OBJECT_INFO) == api


def test_dynamic_prompt_choices_escapes_and_comments():
    import random

    from comfy_worker.workflow.convert import dynamic_prompt

    rng = random.Random(3)
    assert dynamic_prompt("a {red|red} fox", rng) == "a red fox"
    assert dynamic_prompt("{x|{y|y}}", rng) in {"x", "y"}
    assert dynamic_prompt(r"literal \{a|b\} and a|b}", rng) == "literal {a|b} and a|b}"
    assert dynamic_prompt("keep /* gone */this // and not this", rng) == "keep this "
    assert dynamic_prompt("open {a|b", rng) == "open {a|b"
    seen = {dynamic_prompt("{cat|dog}", rng) for _ in range(50)}
    assert seen == {"cat", "dog"}
