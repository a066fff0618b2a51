"""Replays captured requests against the emulator and compares responses, histories and websocket
event sequences with what a real ComfyUI 0.33 answered (ids, timestamps and sids ignored)."""

from __future__ import annotations

import io
import json
import re
import struct
from pathlib import Path
from typing import Any

import pytest
import requests
from PIL import Image

from comfy_worker_dev.emulator import EmulatorHandle
from comfy_worker_dev.emulator.client import ComfyClient, event_types

CAPTURES = Path(__file__).parent / "fixtures" / "comfyui"
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
TEMP_NAME = re.compile(r"ComfyUI_temp_[a-z]{5}_")


def capture(name: str) -> Any:
    return json.loads((CAPTURES / name).read_text())


def captured_types(name: str) -> list[str]:
    types = []
    for line in (CAPTURES / name).read_text().splitlines():
        row = json.loads(line)
        if row["kind"] == "text" and not (row["data"]["type"] == "status" and "sid" in row["data"]["data"]):
            types.append(row["data"]["type"])
    return types


def normalise(value: Any) -> Any:
    """Drop what differs between runs: ids, timestamps, queue numbers, tracebacks, temp names."""
    if isinstance(value, dict):
        return {UUID.sub("<id>", k): ("<ts>" if k in ("timestamp", "create_time") else
                                      "<tb>" if k == "traceback" else normalise(v))
                for k, v in value.items()}
    if isinstance(value, list):
        return [normalise(v) for v in value]
    if isinstance(value, str):
        return TEMP_NAME.sub("ComfyUI_temp_<r>_", UUID.sub("<id>", value))
    return value


def history_entry(hist: dict[str, Any]) -> dict[str, Any]:
    entry = normalise(next(iter(hist.values())))
    entry["prompt"][0] = "<n>"
    return entry


@pytest.fixture
def fresh(emu: EmulatorHandle) -> EmulatorHandle:
    emu.reset()
    return emu


ERROR_CASES = sorted(p.name[: -len("_request.json")] for p in CAPTURES.glob("err_*_request.json"))


@pytest.mark.parametrize("case", ERROR_CASES)
def test_error_response_matches_capture(fresh: EmulatorHandle, case: str) -> None:
    request = capture(f"{case}_request.json")
    expected = capture(f"{case}_response.json")
    if "raw_body" in request:
        resp = requests.post(fresh.url + "/prompt", data=request["raw_body"], timeout=10)
        assert resp.status_code == expected["status"]
        assert resp.headers["Content-Type"] == expected["headers"]["Content-Type"]
        if "text" in expected:
            assert resp.text == expected["text"]
        else:
            assert normalise(resp.json()) == normalise(expected["json"])
        return
    resp = requests.post(fresh.url + "/prompt", json=request, timeout=10)
    assert resp.status_code == expected["status"]
    assert normalise(resp.json()) == normalise(expected["json"])


def _png(size: tuple[int, int], color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def _replay(client: ComfyClient, case: str) -> str:
    request = capture(f"{case}_request.json")
    prompt_id, frames = client.run({k: v for k, v in request.items() if k != "client_id"})
    assert event_types(frames) == captured_types(f"{case}_ws.jsonl"), case
    assert history_entry(client.history(prompt_id)) == history_entry(capture(f"{case}_history.json")["json"])
    return prompt_id


def test_flows_replay_like_the_capture_session(fresh: EmulatorHandle) -> None:
    """The captured flows in their captured order, so cache state matches (LoadImage cached, …)."""
    uploaded = ComfyClient(fresh.url).upload("cap_input.png", _png((48, 32), (10, 120, 200)), overwrite=True)
    assert uploaded.json() == capture("upload_image_response.json")["json"]
    for case in ("flow_emptyimage_save", "flow_loadimage_invert_save", "flow_imagescale_save",
                 "flow_preview_image_temp", "flow_client_prompt_id", "flow_partial_invalid_outputs",
                 "cache_identical_run1", "cache_identical_run2", "cache_identical_run3", "cache_changed_color"):
        client = ComfyClient(fresh.url, capture(f"{case}_request.json")["client_id"]).connect()
        try:
            _replay(client, case)
        finally:
            client.close()


def test_partial_invalid_outputs_response_carries_node_errors(fresh: EmulatorHandle) -> None:
    request = capture("flow_partial_invalid_outputs_request.json")
    resp = requests.post(fresh.url + "/prompt", json=request, timeout=10)
    assert resp.status_code == 200
    assert normalise(resp.json()["node_errors"]) == normalise(
        capture("flow_partial_invalid_outputs_response.json")["json"]["node_errors"])


def test_upload_rename_and_dedupe_like_capture(fresh: EmulatorHandle) -> None:
    client = ComfyClient(fresh.url)
    first, other = _png((8, 8), (1, 2, 3)), _png((8, 8), (9, 9, 9))
    assert client.upload("cap_input.png", first, overwrite=True).json() == \
        capture("upload_image_response.json")["json"]
    assert client.upload("cap_input.png", first).json() == \
        capture("upload_image_same_again_no_overwrite_response.json")["json"]
    assert client.upload("cap_input.png", other).json() == \
        capture("upload_image_different_no_overwrite_response.json")["json"]
    assert client.upload("x.png", first, subfolder="../../escape").status_code == 400


def test_corrupt_image_gives_execution_error_like_capture(fresh: EmulatorHandle) -> None:
    request = capture("exec_error_corrupt_loadimage_request.json")
    client = ComfyClient(fresh.url, request["client_id"]).connect()
    try:
        noisy = io.BytesIO()
        Image.frombytes("RGB", (32, 32), bytes(range(256)) * 12).save(noisy, format="PNG")
        client.upload("cap_corrupt.png", noisy.getvalue()[:20], overwrite=True)
        prompt_id, frames = client.run({"prompt": request["prompt"]})
        assert event_types(frames) == captured_types("exec_error_corrupt_loadimage_ws.jsonl")
        error = next(f["data"] for f in frames if f["type"] == "execution_error")
        assert set(error) == {"prompt_id", "node_id", "node_type", "executed", "exception_message",
                              "exception_type", "traceback", "current_inputs", "current_outputs", "timestamp"}
        assert (error["node_id"], error["node_type"], error["executed"]) == ("1", "LoadImage", [])
        assert error["current_inputs"] == {"image": ["cap_corrupt.png"]}
        assert error["exception_type"] == "OSError"
        entry = client.history(prompt_id)[prompt_id]
        assert entry["status"]["status_str"] == "error" and entry["outputs"] == {}
        assert [m[0] for m in entry["status"]["messages"]] == ["execution_start", "execution_cached",
                                                                "execution_error"]
    finally:
        client.close()


def test_interrupt_slow_chain_like_capture(fresh: EmulatorHandle) -> None:
    fresh.set_faults(node_delay=0.15)
    client = ComfyClient(fresh.url).connect()
    try:
        request = capture("interrupt_slow_chain_request.json")
        small = json.loads(json.dumps(request["prompt"]).replace("2048", "64").replace("1024", "32"))
        small["1"]["inputs"]["batch_size"] = 1
        first = client.post_prompt({"prompt": small}).json()["prompt_id"]
        second = client.post_prompt(capture("flow_emptyimage_save_request.json")).json()["prompt_id"]
        client.events.wait_for(lambda f: f["type"] == "executing" and f["data"].get("node") == "11")
        assert client.post("/interrupt", {"prompt_id": first}).status_code == 200
        client.events.wait_done(second)
        types = [f["type"] for f in client.events.frames]
        assert types.count("execution_interrupted") == 1 and types.count("execution_success") == 1
        assert types.index("execution_interrupted") < types.index("execution_success")
        hist = client.history(first)[first]
        assert (hist["status"]["status_str"], hist["status"]["completed"]) == ("error", False)
        assert hist["status"]["messages"][-1][0] == "execution_interrupted"
        assert set(hist["status"]["messages"][-1][1]) == {"prompt_id", "node_id", "node_type", "executed",
                                                          "timestamp"}
    finally:
        client.close()


def test_queue_delete_of_pending_item(fresh: EmulatorHandle) -> None:
    fresh.set_faults(node_delay=0.3)
    client = ComfyClient(fresh.url).connect()
    try:
        body = capture("flow_emptyimage_save_request.json")
        running = client.post_prompt(body).json()["prompt_id"]
        body2 = json.loads(json.dumps(body).replace("cap_empty", "cap_deleted"))
        pending = client.post_prompt(body2).json()["prompt_id"]
        queue = client.get("/queue").json()
        assert [item[1] for item in queue["queue_pending"]] == [pending]
        assert client.post("/queue", {"delete": [pending]}).status_code == 200
        assert client.get("/queue").json()["queue_pending"] == []
        assert client.history(running) == {}   # still running: no entry yet
        client.events.wait_done(running)
        assert client.history(pending) == {}
    finally:
        client.close()


def test_sd_txt2img_flow_replays(fresh: EmulatorHandle) -> None:
    ckpt = fresh.base_dir / "models" / "checkpoints" / "tiny-sd15.safetensors"
    ckpt.write_bytes(b"\0" * 16)
    try:
        assert requests.get(fresh.url + "/models/checkpoints", timeout=10).json() == \
            capture("sd_models_checkpoints.json")["json"]
        client = ComfyClient(fresh.url).connect()
        for case in ("sd_txt2img_run1", "sd_txt2img_run2"):
            request = capture(f"{case}_request.json")
            client.close()
            client = ComfyClient(fresh.url, request["client_id"]).connect()
            prompt_id, frames = client.run({"prompt": request["prompt"]})
            assert event_types(frames) == captured_types(f"{case}_ws.jsonl"), case
            progress = [f["data"] for f in frames if f["type"] == "progress"]
            assert progress == [{"value": i, "max": 2, "prompt_id": prompt_id, "node": "3"} for i in (1, 2)]
            outputs = client.history(prompt_id)[prompt_id]["outputs"]
            image = outputs["9"]["images"][0]
            with Image.open(fresh.output_dir / image["subfolder"] / image["filename"]) as img:
                assert img.size == (64, 64)
        client.close()
    finally:
        ckpt.unlink()


def _with_binary(name: str) -> list[str]:
    """The capture's frame types with its binary frames (previews) where they came, as `binary`."""
    types = []
    for line in (CAPTURES / name).read_text().splitlines():
        row = json.loads(line)
        if row["kind"] == "binary":
            types.append("binary")
        elif row["kind"] == "text" and not (row["data"]["type"] == "status" and "sid" in row["data"]["data"]):
            types.append(row["data"]["type"])
    return types


def test_previews_come_after_each_step_like_the_capture(fresh: EmulatorHandle) -> None:
    """extra_data.preview_method asks for previews of one prompt: a legacy frame (type 1, JPEG, 512 px) after
    each step's progress, exactly where the real ComfyUI sent them; with `supports_preview_metadata` declared,
    type 4 frames carrying the node and prompt ids."""
    ckpt = fresh.base_dir / "models" / "checkpoints" / "tiny-sd15.safetensors"
    ckpt.write_bytes(b"\0" * 16)
    try:
        request = capture("sd_txt2img_run1_request.json")
        client = ComfyClient(fresh.url, request["client_id"]).connect()
        client.run({"prompt": request["prompt"]})  # loader, texts and latent now cached, as in the capture
        client.close()
        request = capture("sd_txt2img_with_previews_request.json")
        client = ComfyClient(fresh.url, request["client_id"]).connect()
        prompt_id, frames = client.run({"prompt": request["prompt"], "extra_data": request["extra_data"]})
        client.close()
        assert event_types(frames) == _with_binary("sd_txt2img_with_previews_ws.jsonl")
        binary = [f["data"] for f in frames if f["type"] == "binary"]
        assert all(b[:8] == struct.pack(">II", 1, 1) for b in binary)
        with Image.open(io.BytesIO(binary[0][8:])) as img:
            assert img.format == "JPEG" and img.size == (512, 512)
        # The same prompt without preview_method: no frame at all (ComfyUI's default is --preview-method none).
        plain = dict(request["prompt"], **{"3": {**request["prompt"]["3"], "inputs": {
            **request["prompt"]["3"]["inputs"], "seed": 5}}})
        client = ComfyClient(fresh.url).connect()
        _, frames = client.run({"prompt": plain})
        client.close()
        assert "binary" not in event_types(frames)
        client = ComfyClient(fresh.url).connect(feature_flags={"supports_preview_metadata": True})
        prompt_id, frames = client.run({"prompt": dict(plain, **{"3": {**plain["3"], "inputs": {
            **plain["3"]["inputs"], "seed": 6}}}), "extra_data": {"preview_method": "latent2rgb"}})
        client.close()
        binary = [f["data"] for f in frames if f["type"] == "binary"]
        assert len(binary) == 4
        kind, size = struct.unpack(">II", binary[0][:8])
        meta = json.loads(binary[0][8:8 + size])
        rows = [json.loads(line) for line in
                (CAPTURES / "wsbinary_saveimagewebsocket_featureflags_ws.jsonl").read_text().splitlines()]
        expected = next(row["metadata"] for row in rows if row["kind"] == "binary")
        assert kind == 4 and list(meta) == list(expected)
        assert meta["node_id"] == "3" and meta["prompt_id"] == prompt_id and meta["image_type"] == "image/jpeg"
    finally:
        ckpt.unlink()


def test_simple_endpoints_match_capture(fresh: EmulatorHandle) -> None:
    get = lambda path: requests.get(fresh.url + path, timeout=10)  # noqa: E731
    assert get("/models").json() == capture("models_list.json")["json"]
    assert get("/models/unet").status_code == 404
    assert get("/object_info/NoSuchNodeClass").json() == {}
    assert get("/object_info/EmptyImage").json() == capture("object_info_EmptyImage.json")["json"]
    assert get("/api/features").json() == capture("features.json")["json"]
    assert get("/embeddings").json() == capture("embeddings.json")["json"]
    assert get("/prompt").json() == capture("prompt_get.json")["json"]
    assert get("/queue").json() == capture("queue_idle.json")["json"]
    assert get("/history/" + "0" * 8 + "-0000-4000-8000-" + "0" * 12).json() == {}
    assert get("/view?filename=nothing.png").status_code == capture("view_missing_file.json")["status"]
    assert get("/view?filename=x.png&type=secret").status_code == capture("view_bad_type.json")["status"]
    assert get("/view?filename=x.png&subfolder=../..").status_code == 403
    assert get("/view?filename=../x.png").status_code == 400
    assert requests.post(fresh.url + "/interrupt", timeout=10).status_code == 200
    assert requests.post(fresh.url + "/free", json=capture("free_request.json"), timeout=10).status_code == 200
