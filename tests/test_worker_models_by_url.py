"""A LoRA named by URL, fetched into the model cache and loaded by ComfyUI itself: the emulator, and the real
ComfyUI when COMFYUI_DIR is set (the worker shows ComfyUI the cache through an extra model paths file, as it
does in the image). The LoRA's keys match no model; ComfyUI loads it all the same."""

from __future__ import annotations

from pathlib import Path

import pytest

from .modelserver import model_server, safetensors_bytes
from .test_models_by_url import lora_workflow
from .workerkit import boot_runtime, real_comfyui, run

TARGETS = ["emulator"] + (["real"] if real_comfyui() else [])


@pytest.mark.parametrize("target", TARGETS)
def test_a_lora_named_by_url_loads_in_comfyui(tmp_path: Path, target: str) -> None:
    with model_server() as served:
        served.files["style.safetensors"] = safetensors_bytes(5)
        runtime, settings = boot_runtime(tmp_path, real=target == "real", MODEL_CACHE_DIR=str(tmp_path / "cache"),
                                         MODEL_URL_HOSTS="127.0.0.1", ALLOW_PRIVATE_URLS="true",
                                         ALLOW_HTTP_URLS="true")
        try:
            url = f"http://127.0.0.1:{served.port}/files/style.safetensors"
            result = run(runtime, settings, {"workflow": lora_workflow(), "inputs": {"1.lora_name": url}})
            assert "error" not in result, result
            [text] = [o["text"] for o in result["outputs"] if o["kind"] == "text"]
            if target == "emulator":  # the emulator's loader reads the header, as safetensors does
                assert "style.safetensors:2 tensors" in text
            else:  # ComfyUI loaded the file (load_torch_file, safe_load) into a LoRA hook
                assert "HookGroup" in text
            again = run(runtime, settings, {"workflow": lora_workflow(url)}, job_id="job-2")
            assert "error" not in again, again
            assert served.bodies("style.safetensors") == 1
        finally:
            runtime.shutdown()
