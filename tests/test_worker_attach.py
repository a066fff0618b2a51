"""COMFYUI_URL: the worker attaches to a ComfyUI it did not start, and reads outputs over HTTP."""

from __future__ import annotations

from comfy_worker.comfy import AttachedComfy, connect
from comfy_worker.settings import Settings
from comfy_worker_dev.emulator import start_emulator

from .workerkit import empty_image_workflow, error_of, run


def test_attached_comfyui(tmp_path):
    emulator = start_emulator(tmp_path / "emu")
    try:
        settings = Settings.from_env({"COMFYUI_URL": emulator.url, "COMFY_HISTORY_POLL_INTERVAL": "1"})
        runtime = connect(settings)
        assert runtime.boot() and isinstance(runtime, AttachedComfy)
        assert not runtime.local_files
        result = run(runtime, settings, {"workflow": empty_image_workflow(color=0x123456)})
        assert "error" not in result, result
        assert result["outputs"][0]["width"] == 64
        assert runtime.client.history(result["prompt_id"]) is None
        # Whether ComfyUI is alive is asked after every job: the open websocket answers, with no request.
        asked: list[float] = []
        stats = runtime.client.system_stats
        runtime.client.system_stats = lambda timeout=5: asked.append(timeout) or stats(timeout=timeout)
        assert runtime.is_alive() and asked == []
        runtime.events.stop()
        assert runtime.is_alive() and asked == [5]  # a dropped websocket: ComfyUI is asked
        runtime.shutdown()
    finally:
        emulator.stop()


def test_attached_comfyui_that_is_gone(tmp_path):
    settings = Settings.from_env({"COMFYUI_URL": "http://127.0.0.1:9", "COMFYUI_START_TIMEOUT": "1"})
    runtime = connect(settings)
    assert runtime.boot() is False
    err = error_of(run(runtime, settings, {"workflow": empty_image_workflow()}))
    assert err["code"] == "COMFYUI_UNAVAILABLE" and "127.0.0.1:9" in err["message"]
    runtime.shutdown()
