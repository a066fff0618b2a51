"""Fault injection and the emulator-only behaviours tests depend on (model folders, media outputs,
websocket reconnect quirk, start-up as a ComfyUI checkout)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from PIL import Image

from comfy_worker_dev.emulator import EmulatorHandle, Faults, make_fake_comfyui_dir, start_emulator
from comfy_worker_dev.emulator.client import ComfyClient
from comfy_worker_dev.emulator.executor import OOM_TIP


@pytest.fixture
def fresh(emu: EmulatorHandle) -> Iterator[EmulatorHandle]:
    emu.reset()
    yield emu
    emu.reset()


def _empty_save(prefix: str, color: int = 7) -> dict[str, Any]:
    return {"prompt": {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 16, "batch_size": 1, "color": color}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": prefix}}}}


def test_oom_fault_reports_torch_oom_with_tip(fresh: EmulatorHandle) -> None:
    fresh.set_faults(oom_on_node="EmptyImage")
    client = ComfyClient(fresh.url).connect()
    _, frames = client.run(_empty_save("oom"))
    error = next(f["data"] for f in frames if f["type"] == "execution_error")
    assert error["exception_type"] == "torch.OutOfMemoryError"
    assert error["exception_message"].endswith("\n" + OOM_TIP)
    assert error["node_id"] == "1"
    client.close()


def test_error_fault_by_node_id(fresh: EmulatorHandle) -> None:
    fresh.set_faults(error_on_node="2")
    client = ComfyClient(fresh.url).connect()
    prompt_id, frames = client.run(_empty_save("err"))
    error = next(f["data"] for f in frames if f["type"] == "execution_error")
    assert (error["node_id"], error["exception_type"], error["executed"]) == ("2", "RuntimeError", ["1"])
    assert client.history(prompt_id)[prompt_id]["status"]["status_str"] == "error"
    client.close()


def test_drop_final_message_keeps_history(fresh: EmulatorHandle) -> None:
    fresh.set_faults(drop_final_message=True)
    client = ComfyClient(fresh.url).connect()
    prompt_id = client.post_prompt(_empty_save("drop")).json()["prompt_id"]
    client.events.wait_for(lambda f: f["type"] == "executed")
    deadline = time.monotonic() + 10
    while not client.history(prompt_id) and time.monotonic() < deadline:
        time.sleep(0.02)
    entry = client.history(prompt_id)[prompt_id]
    assert entry["status"]["messages"][-1][0] == "execution_success"
    time.sleep(0.2)
    assert "execution_success" not in client.events.types()
    assert not [f for f in client.events.frames if f["type"] == "executing" and f["data"]["node"] is None]
    client.close()


def test_drop_ws_after_closes_sockets(fresh: EmulatorHandle) -> None:
    client = ComfyClient(fresh.url).connect()
    fresh.set_faults(drop_ws_after=3)
    client.post_prompt(_empty_save("dropws"))
    assert client.events.closed.wait(10)
    assert len(client.events.frames) == 1 + 3
    client.close()


def test_hang_keeps_http_alive_and_reset_releases(fresh: EmulatorHandle) -> None:
    fresh.set_faults(hang_on_node="SaveImage")
    client = ComfyClient(fresh.url).connect()
    prompt_id = client.post_prompt(_empty_save("hang")).json()["prompt_id"]
    client.events.wait_for(lambda f: f["type"] == "executing" and f["data"].get("node") == "2")
    time.sleep(0.2)
    assert client.history(prompt_id) == {}
    assert requests.get(fresh.url + "/queue", timeout=5).json()["queue_running"][0][1] == prompt_id
    fresh.set_faults(hang_on_node=None)
    client.events.wait_done(prompt_id)
    client.close()


def test_fail_upload(fresh: EmulatorHandle) -> None:
    fresh.set_faults(fail_upload=True)
    assert ComfyClient(fresh.url).upload("a.png", b"x").status_code == 500
    assert fresh.get_faults().fail_upload is True
    assert requests.post(fresh.url + "/__emulator__/faults", json={"no_such": 1}, timeout=5).status_code == 400


def test_crash_on_node_exits_process(tmp_path: Path) -> None:
    handle = start_emulator(tmp_path, faults={"crash_on_node": "SaveImage"})
    try:
        try:
            requests.post(handle.url + "/prompt", json=_empty_save("crash"), timeout=5)
        except requests.ConnectionError:
            pass  # the process may die before the response is written, as a real crash can
        assert handle.process.wait(timeout=10) == 1
        assert "Emulated crash" in handle.logs()
    finally:
        handle.kill()


def test_exit_at_start_and_start_delay(tmp_path: Path) -> None:
    comfy = make_fake_comfyui_dir(tmp_path / "c")
    env = {**os.environ, "COMFY_EMULATOR_FAULTS": json.dumps({"exit_at_start": 3})}
    done = subprocess.run([sys.executable, str(comfy / "main.py"), "--port", "0", "--cpu", "--fast"],
                          env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 3 and "exiting with code 3" in done.stdout
    handle = start_emulator(tmp_path / "d", faults=Faults(start_delay=0.3))
    try:
        assert requests.get(handle.url + "/system_stats", timeout=5).status_code == 200
        assert "Starting server" in handle.logs()
    finally:
        handle.stop()


def test_models_listed_live_and_checked_by_validation(fresh: EmulatorHandle, tmp_path: Path) -> None:
    body = {"prompt": {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "m.safetensors"}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "x", "clip": ["4", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 32, "height": 32, "batch_size": 1}},
        "3": {"class_type": "KSampler", "inputs": {"seed": 1, "steps": 3, "cfg": 7.0, "sampler_name": "euler",
                                                  "scheduler": "normal", "denoise": 1.0, "model": ["4", 0],
                                                  "positive": ["6", 0], "negative": ["6", 0],
                                                  "latent_image": ["5", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "sd"}}}}
    resp = requests.post(fresh.url + "/prompt", json=body, timeout=5)
    assert resp.status_code == 400
    assert resp.json()["node_errors"]["4"]["errors"][0]["type"] == "value_not_in_list"
    ckpt = fresh.base_dir / "models" / "checkpoints" / "m.safetensors"
    ckpt.write_bytes(b"\0")
    try:
        assert requests.get(fresh.url + "/models/checkpoints", timeout=5).json() == ["m.safetensors"]
        info = requests.get(fresh.url + "/object_info/CheckpointLoaderSimple", timeout=5).json()
        assert info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0] == ["m.safetensors"]
        client = ComfyClient(fresh.url).connect()
        prompt_id, frames = client.run(body)
        assert [f["data"]["value"] for f in frames if f["type"] == "progress"] == [1, 2, 3]
        image = client.history(prompt_id)[prompt_id]["outputs"]["9"]["images"][0]
        assert Image.open(fresh.output_dir / image["filename"]).size == (32, 32)
        client.close()
    finally:
        ckpt.unlink()


def test_extra_model_paths_config(tmp_path: Path) -> None:
    extra = tmp_path / "vol" / "models" / "loras"
    extra.mkdir(parents=True)
    (extra / "style.safetensors").write_bytes(b"\0")
    cfg = tmp_path / "extra.yaml"
    cfg.write_text(f"vol:\n  base_path: {tmp_path / 'vol'}\n  loras: models/loras\n  mything: models/x\n")
    handle = start_emulator(tmp_path / "e", extra_args=["--extra-model-paths-config", str(cfg)])
    try:
        assert requests.get(handle.url + "/models/loras", timeout=5).json() == ["style.safetensors"]
        assert "mything" in requests.get(handle.url + "/api/models", timeout=5).json()
    finally:
        handle.stop()


def test_audio_video_text_and_animated_outputs(fresh: EmulatorHandle) -> None:
    body = {"prompt": {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 16, "batch_size": 3, "color": 99}},
        "2": {"class_type": "SaveAnimatedWEBP", "inputs": {"images": ["1", 0], "filename_prefix": "anim",
                                                          "fps": 6.0, "lossless": True, "quality": 80,
                                                          "method": "default"}},
        "3": {"class_type": "EmptyAudio", "inputs": {"duration": 0.1, "sample_rate": 8000, "channels": 1}},
        "4": {"class_type": "SaveAudio", "inputs": {"audio": ["3", 0], "filename_prefix": "audio/snd"}},
        "5": {"class_type": "CreateVideo", "inputs": {"images": ["1", 0], "fps": 12.0}},
        "6": {"class_type": "SaveVideo", "inputs": {"video": ["5", 0], "filename_prefix": "video/clip",
                                                   "format": "auto", "codec": "auto"}},
        "7": {"class_type": "PreviewAny", "inputs": {"source": "hello"}}}}
    client = ComfyClient(fresh.url).connect()
    prompt_id, _ = client.run(body)
    out = client.history(prompt_id)[prompt_id]["outputs"]
    client.close()
    assert out["2"] == {"images": [{"filename": "anim_00001_.webp", "subfolder": "", "type": "output"}],
                        "animated": [True]}
    assert out["4"] == {"audio": [{"filename": "snd_00001_.flac", "subfolder": "audio", "type": "output"}]}
    assert out["6"]["animated"] == [True] and out["6"]["images"][0]["filename"] == "clip_00001_.mp4"
    assert out["7"] == {"text": ["hello"]}
    assert (fresh.output_dir / "audio" / "snd_00001_.flac").read_bytes()[:4] == b"fLaC"
    assert (fresh.output_dir / "video" / "clip_00001_.mp4").read_bytes()[4:8] == b"ftyp"
    assert Image.open(fresh.output_dir / "anim_00001_.webp").format == "WEBP"


def test_second_socket_with_same_client_id_replaces_the_first(fresh: EmulatorHandle) -> None:
    old = ComfyClient(fresh.url, "same-id").connect()
    new = ComfyClient(fresh.url, "same-id").connect()
    new.run(_empty_save("reconnect", color=5))
    assert "execution_start" not in old.events.types()
    # Closing the old socket unregisters the id, so the new socket now receives nothing (ComfyUI quirk).
    old.close()
    time.sleep(0.2)
    before = len(new.events.frames)
    requests.post(fresh.url + "/prompt", json={**_empty_save("reconnect2", color=6), "client_id": "same-id"},
                  timeout=5)
    time.sleep(0.5)
    assert len(new.events.frames) == before
    new.close()


def test_undeclared_input_changes_cache_signature(fresh: EmulatorHandle) -> None:
    client = ComfyClient(fresh.url).connect()
    body = _empty_save("sig", color=11)
    client.run(body)
    body["prompt"]["1"]["inputs"]["extra_key"] = 1
    _, frames = client.run(body)
    assert next(f for f in frames if f["type"] == "execution_cached")["data"]["nodes"] == []
    client.close()


def test_runs_as_module(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen([sys.executable, "-u", "-m", "comfy_worker_dev.emulator", "--port", "0", "--base-directory",
                             str(tmp_path), "--temp-directory", str(tmp_path / "t"), "--cpu"],
                            cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "To see the GUI go to:" in line:
                break
        url = lines[-1].split("go to: ")[1].strip()
        assert requests.get(url + "/system_stats", timeout=5).status_code == 200
        assert (tmp_path / "t" / "temp").is_dir()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
