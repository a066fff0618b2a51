"""RunPod Hub files: structure (protocols.md §B13), every Settings variable documented, a model-free test."""

from __future__ import annotations

import json
from pathlib import Path

from comfy_worker_build.hub import env_entries, main, render
from comfy_worker.settings import Settings
from comfy_worker_dev.emulator.catalogue import OBJECT_INFO_PATH

REPO = Path(__file__).resolve().parents[1]
HUB = json.loads((REPO / ".runpod" / "hub.json").read_text())
TESTS = json.loads((REPO / ".runpod" / "tests.json").read_text())
OBJECT_INFO = json.loads(OBJECT_INFO_PATH.read_text())


def test_hub_json_has_the_required_fields() -> None:
    for key in ("title", "description", "type", "category", "config"):
        assert HUB[key], key
    assert HUB["type"] == "serverless" and HUB["category"] in {"audio", "embedding", "language", "video", "image"}
    config = HUB["config"]
    assert config["runsOn"] == "GPU" and isinstance(config["containerDiskInGb"], int)
    assert config["gpuCount"] >= 1 and config["gpuIds"]
    for item in config["env"]:
        assert set(item) in ({"key", "value"}, {"key", "input"}), item
        if "input" in item:
            spec = item["input"]
            assert spec["type"] in {"string", "number", "boolean", "huggingface"}
            assert spec["name"] and spec["description"], item["key"]
            if spec["type"] == "boolean":
                assert isinstance(spec["default"], bool) and spec["trueValue"] == "true"


def test_every_settings_variable_is_in_hub_json() -> None:
    """Compares against Settings as it is now; after adding a setting run
    `PYTHONPATH=src python -m comfy_worker_build.hub` to regenerate the list."""
    keys = {item["key"] for item in HUB["config"]["env"]}
    missing = sorted(set(Settings.env_names().values()) - keys)
    assert not missing, f"not in .runpod/hub.json (regenerate with python -m comfy_worker_build.hub): {missing}"
    assert main(["--hub", str(REPO / ".runpod" / "hub.json"), "--check"]) == 0


def test_generated_entries_follow_the_settings_types(tmp_path: Path) -> None:
    entries = {item["key"]: item["input"] for item in env_entries()}
    assert entries["CLEANUP"]["type"] == "boolean" and entries["CLEANUP"]["default"] is True
    assert entries["COMFYUI_PORT"] == {**entries["COMFYUI_PORT"], "type": "number", "min": 1, "max": 65535}
    assert entries["NETWORK_VOLUME_PATH"]["default"] == "/runpod-volume"
    assert "advanced" not in entries["LOG_LEVEL"] and entries["COMFYUI_DIR"]["advanced"] is True
    assert "HF_TOKEN" in entries
    stale = tmp_path / "hub.json"
    stale.write_text(json.dumps({**HUB, "config": {**HUB["config"], "env": []}}))
    assert main(["--hub", str(stale), "--check"]) == 1
    assert main(["--hub", str(stale)]) == 0
    assert json.loads(stale.read_text()) == render(HUB)


def test_tests_json_runs_a_model_free_workflow_of_known_nodes() -> None:
    [test] = TESTS["tests"]
    assert test["name"] and test["timeout"] > 0
    workflow = test["input"]["workflow"]
    assert set(test["input"]) == {"workflow"}
    for node_id, node in workflow.items():
        info = OBJECT_INFO[node["class_type"]]
        known = {**info["input"].get("required", {}), **info["input"].get("optional", {})}
        assert set(node["inputs"]) <= set(known), node_id
        for value in node["inputs"].values():
            if isinstance(value, list):
                assert value[0] in workflow
        assert not any("loader" in node["class_type"].lower() for _ in [0])
    assert any(OBJECT_INFO[n["class_type"]].get("output_node") for n in workflow.values())
    config = TESTS["config"]
    assert config["gpuCount"] == 1 and config["gpuTypeId"]
    assert all(set(item) == {"key", "value"} for item in config["env"])
