"""Our UI→API conversion against the web app's own: fixtures recorded from ComfyUI's web app
(``app.graphToPrompt()`` after ``app.loadGraphData``, see tests/tools/record_graph_to_prompt.py).

Node for node and input for input, class types, inputs and titles must be equal.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from comfy_worker.workflow import convert_ui_workflow
from comfy_worker_dev.emulator.catalogue import OBJECT_INFO_PATH

FIXTURES = Path(__file__).parent / "fixtures"
OBJECT_INFO = json.loads(OBJECT_INFO_PATH.read_text())
RECORDED = sorted((FIXTURES / "graph_to_prompt").glob("*.json"))

templates_pkg = pytest.importorskip("comfyui_workflow_templates_json")
TEMPLATE_DIR = Path(templates_pkg.__file__).parent / "templates"

# The web app titles an untitled node with the name in its own bundled English node list, which for a
# few classes differs from the display_name the server's /object_info gives (a frontend data difference,
# not a conversion rule). Class type -> the web app's title.
FRONTEND_TITLES = {"LTXVSeparateAVLatent": "LTXVSeparateAVLatent", "LTXVConcatAVLatent": "LTXVConcatAVLatent"}


def _load(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    fixture = json.loads(path.read_text())
    ui = json.loads((TEMPLATE_DIR / f"{fixture['template']}.json").read_text())
    return fixture, ui


def _features(ui: dict[str, Any]) -> set[str]:
    graphs = [ui, *((ui.get("definitions") or {}).get("subgraphs") or [])]
    found = set()
    if len(graphs) > 1:
        found.add("subgraph")
    for node in (n for g in graphs for n in g.get("nodes") or []):
        if node.get("type") in ("PrimitiveNode", "Reroute"):
            found.add(node["type"])
        found.add({2: "muted", 4: "bypassed"}.get(node.get("mode"), "plain"))
    return found


def test_recorded_corpus_covers_the_conversion_rules() -> None:
    assert 30 <= len(RECORDED) <= 40
    features = [_features(_load(p)[1]) for p in RECORDED]
    assert sum("subgraph" in f for f in features) >= 10
    for feature in ("PrimitiveNode", "Reroute", "muted", "bypassed"):
        assert any(feature in f for f in features), feature


@pytest.mark.parametrize("path", RECORDED, ids=lambda p: p.stem)
def test_conversion_equals_the_web_apps(path: Path) -> None:
    fixture, ui = _load(path)
    web = fixture["output"]
    # None of the recorded templates has {a|b} choices in a dynamic prompt, so the seeded random choice
    # never decides anything here; comments are stripped deterministically and are compared.
    ours = convert_ui_workflow(ui, OBJECT_INFO, rng=random.Random(0))
    assert sorted(ours) == sorted(web), "different node ids"
    for node_id, expected in web.items():
        got = ours[node_id]
        assert got["class_type"] == expected["class_type"], node_id
        for name in sorted(set(expected["inputs"]) | set(got["inputs"])):
            assert got["inputs"].get(name, "<absent>") == expected["inputs"].get(name, "<absent>"), \
                f"node {node_id} ({expected['class_type']}) input {name!r}"
        title = expected["_meta"]["title"]
        if FRONTEND_TITLES.get(expected["class_type"]) == title:
            title = OBJECT_INFO[expected["class_type"]]["display_name"]
        assert got["_meta"]["title"] == title, node_id


def test_dry_run_through_the_worker_returns_the_web_apps_graph(tmp_path) -> None:
    """A user's check before paying for a run: send the UI workflow with dry_run and get back exactly the
    graph the web app would have queued (through the whole job path, against the emulator)."""
    from tests.workerkit import boot_runtime, run

    with_subgraphs = [p for p in RECORDED if "subgraph" in _features(_load(p)[1])][:2]
    plain = [p for p in RECORDED if "subgraph" not in _features(_load(p)[1])][:1]
    runtime, settings = boot_runtime(tmp_path)
    try:
        for path in with_subgraphs + plain:
            fixture, ui = _load(path)
            result = run(runtime, settings, {"workflow": ui, "execution_config": {"dry_run": True}})
            assert result.get("dry_run") is True, result
            graph = result["workflow"]
            assert sorted(graph) == sorted(fixture["output"]), path.stem
            for node_id, expected in fixture["output"].items():
                assert graph[node_id]["class_type"] == expected["class_type"]
                assert graph[node_id]["inputs"] == expected["inputs"], f"{path.stem} node {node_id}"
            assert "preflight" in result and runtime.client.queue() == {"queue_running": [], "queue_pending": []}
    finally:
        runtime.shutdown()
