"""What the worker relies on in ComfyUI's API, checked against the emulator and (when COMFYUI_DIR is set)
a real ComfyUI, so the emulator cannot drift from the real thing."""

from __future__ import annotations

import io
import json
import uuid
from pathlib import Path
from typing import Any

import requests
from PIL import Image

from tests.contract.conftest import ComfyServer
from comfy_worker_dev.emulator.client import ComfyClient

CAPTURES = Path(__file__).resolve().parents[1] / "fixtures" / "comfyui"


def capture(name: str) -> Any:
    return json.loads((CAPTURES / name).read_text())


def _empty_save(prefix: str, color: int = 0x123456, size: int = 32) -> dict[str, Any]:
    return {"prompt": {
        "1": {"class_type": "EmptyImage", "inputs": {"width": size, "height": size, "batch_size": 1,
                                                     "color": color}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": prefix}}}}


def _png(color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buf, format="PNG")
    return buf.getvalue()


def _errors_without_tracebacks(body: dict[str, Any]) -> dict[str, Any]:
    for node in body.get("node_errors", {}).values():
        for err in node["errors"]:
            err["extra_info"].pop("traceback", None)
    return body


def test_successful_flow_event_order_and_history(comfy_server: ComfyServer) -> None:
    client = ComfyClient(comfy_server.url).connect()
    try:
        prefix = f"contract_{uuid.uuid4().hex[:8]}"
        prompt_id, frames = client.run(_empty_save(prefix))
        mine = [f for f in frames if f["data"].get("prompt_id") == prompt_id]
        types = [f["type"] for f in mine]
        assert types[:2] == ["execution_start", "execution_cached"]
        assert types[-2:] == ["execution_success", "executing"]
        assert types.index("executed") < types.index("execution_success")
        assert [f["data"]["node"] for f in mine if f["type"] == "executing"] == ["1", "2", None]
        # History is written before the final executing{node:null}.
        entry = client.history(prompt_id)[prompt_id]
        assert list(entry) == ["prompt", "outputs", "status", "meta"]
        assert entry["prompt"][1] == prompt_id and entry["prompt"][4] == ["2"]
        assert entry["prompt"][3]["client_id"] == client.client_id and "create_time" in entry["prompt"][3]
        assert entry["outputs"] == {"2": {"images": [{"filename": f"{prefix}_00001_.png", "subfolder": "",
                                                      "type": "output"}]}}
        assert entry["status"]["status_str"] == "success" and entry["status"]["completed"] is True
        assert [m[0] for m in entry["status"]["messages"]] == ["execution_start", "execution_cached",
                                                                "execution_success"]
        assert entry["meta"]["2"] == {"node_id": "2", "display_node": "2", "parent_node": None,
                                      "real_node_id": "2"}
        view = requests.get(comfy_server.url + "/view", params={"filename": f"{prefix}_00001_.png",
                                                                "type": "output"}, timeout=10)
        assert view.status_code == 200 and view.headers["Content-Type"] == "image/png"
        assert Image.open(io.BytesIO(view.content)).size == (32, 32)
    finally:
        client.close()


def test_identical_prompt_is_replayed_from_cache(comfy_server: ComfyServer) -> None:
    client = ComfyClient(comfy_server.url).connect()
    try:
        body = _empty_save(f"cache_{uuid.uuid4().hex[:8]}", color=0xABCDEF)
        first, _ = client.run(body)
        second, frames = client.run(body)
        cached = next(f for f in frames if f["type"] == "execution_cached")["data"]["nodes"]
        assert sorted(cached) == ["1", "2"]
        assert not [f for f in frames if f["type"] == "executing" and f["data"]["node"] is not None]
        executed = [f["data"]["output"] for f in frames if f["type"] == "executed"]
        assert executed == [client.history(first)[first]["outputs"]["2"]]
        assert client.history(second)[second]["outputs"] == client.history(first)[first]["outputs"]
    finally:
        client.close()


def test_upload_renames_different_content_and_dedupes_same(comfy_server: ComfyServer) -> None:
    client = ComfyClient(comfy_server.url)
    name = f"up_{uuid.uuid4().hex[:8]}.png"
    assert client.upload(name, _png((1, 1, 1)), overwrite=True).json() == \
        {"name": name, "subfolder": "", "type": "input"}
    assert client.upload(name, _png((1, 1, 1))).json()["name"] == name
    assert client.upload(name, _png((2, 2, 2))).json()["name"] == name.replace(".png", " (1).png")
    sub = client.upload(name, _png((3, 3, 3)), subfolder="job1").json()
    assert sub == {"name": name, "subfolder": "job1", "type": "input"}
    assert client.upload(name, _png((3, 3, 3)), subfolder="../../x").status_code == 400


def test_validation_error_bodies(comfy_server: ComfyServer) -> None:
    for case in ("err_unknown_class_type", "err_value_above_max_width100000", "err_missing_required_input",
                 "err_value_not_in_list_combo", "err_link_to_missing_node", "err_no_output_node"):
        resp = requests.post(comfy_server.url + "/prompt", json=capture(f"{case}_request.json"), timeout=10)
        assert resp.status_code == 400, case
        assert _errors_without_tracebacks(resp.json()) == \
            _errors_without_tracebacks(capture(f"{case}_response.json")["json"]), case


def test_unknown_history_is_empty_and_running_prompt_has_none(comfy_server: ComfyServer) -> None:
    assert requests.get(f"{comfy_server.url}/history/{uuid.uuid4()}", timeout=10).json() == {}
    if comfy_server.emulator is not None:
        comfy_server.emulator.set_faults(node_delay=0.3)
    client = ComfyClient(comfy_server.url).connect()
    try:
        body = _slow_prompt()
        prompt_id = client.post_prompt(body).json()["prompt_id"]
        client.events.wait_for(lambda f: f["type"] == "executing" and f["data"].get("prompt_id") == prompt_id)
        assert client.history(prompt_id) == {}
        client.post("/interrupt", {"prompt_id": prompt_id})
        client.events.wait_done(prompt_id, timeout=60)
        entry = client.history(prompt_id)[prompt_id]
        assert entry["status"]["status_str"] == "error" and entry["status"]["completed"] is False
        last = entry["status"]["messages"][-1]
        assert last[0] == "execution_interrupted"
        assert set(last[1]) == {"prompt_id", "node_id", "node_type", "executed", "timestamp"}
    finally:
        if comfy_server.emulator is not None:
            comfy_server.emulator.set_faults(node_delay=0.0)
        client.close()


def _slow_prompt() -> dict[str, Any]:
    prompt: dict[str, Any] = {"1": {"class_type": "EmptyImage", "inputs": {
        "width": 1024, "height": 1024, "batch_size": 4, "color": uuid.uuid4().int & 0xFFFFFF}}}
    prev = "1"
    for i in range(10, 22):
        size = 2048 if i % 2 == 0 else 1024
        prompt[str(i)] = {"class_type": "ImageScale", "inputs": {
            "image": [prev, 0], "upscale_method": "lanczos", "width": size, "height": size, "crop": "disabled"}}
        prev = str(i)
    prompt["99"] = {"class_type": "PreviewImage", "inputs": {"images": [prev, 0]}}
    return {"prompt": prompt}


def test_execution_error_fields(comfy_server: ComfyServer) -> None:
    client = ComfyClient(comfy_server.url).connect()
    try:
        name = f"corrupt_{uuid.uuid4().hex[:8]}.png"
        noisy = io.BytesIO()
        Image.frombytes("RGB", (32, 32), bytes(range(256)) * 12).save(noisy, format="PNG")
        client.upload(name, noisy.getvalue()[:20], overwrite=True)
        body = {"prompt": {
            "1": {"class_type": "LoadImage", "inputs": {"image": name}},
            "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
            "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "never"}}}}
        prompt_id, frames = client.run(body)
        error = next(f["data"] for f in frames if f["type"] == "execution_error")
        assert set(error) == {"prompt_id", "node_id", "node_type", "executed", "exception_message",
                              "exception_type", "traceback", "current_inputs", "current_outputs", "timestamp"}
        assert (error["prompt_id"], error["node_id"], error["node_type"]) == (prompt_id, "1", "LoadImage")
        assert error["exception_type"] == "OSError" and error["current_inputs"] == {"image": [name]}
        assert isinstance(error["traceback"], list) and error["exception_message"] == "Truncated File Read\n"
        types = [f["type"] for f in frames]
        assert types[-3:] == ["execution_error", "status", "executing"]
        entry = client.history(prompt_id)[prompt_id]
        assert entry["status"]["status_str"] == "error" and entry["outputs"] == {}
    finally:
        client.close()
