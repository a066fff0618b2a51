"""Every output kind comes back: animated image, audio, video and text, from one job."""

from __future__ import annotations

import base64
import hashlib

import pytest

from comfy_run import outputs_with_data
from .workerkit import boot_runtime, real_comfyui, run

TARGETS = ["emulator"] + (["real"] if real_comfyui() else [])

MIXED = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 32, "batch_size": 4, "color": 0x3366FF}},
    "2": {"class_type": "SaveAnimatedWEBP", "inputs": {"images": ["1", 0], "filename_prefix": "anim", "fps": 4.0,
                                                       "lossless": False, "quality": 80, "method": "default"}},
    "3": {"class_type": "EmptyAudio", "inputs": {"duration": 0.5, "sample_rate": 8000, "channels": 1}},
    "4": {"class_type": "SaveAudio", "inputs": {"audio": ["3", 0], "filename_prefix": "audio/clip"}},
    "5": {"class_type": "CreateVideo", "inputs": {"images": ["1", 0], "fps": 4.0}},
    "6": {"class_type": "SaveVideo", "inputs": {"video": ["5", 0], "filename_prefix": "video/clip",
                                                 "format": "auto", "format.codec": "auto"}},
    "7": {"class_type": "PreviewAny", "inputs": {"source": "a caption from the workflow"}},
}


@pytest.mark.parametrize("target", TARGETS)
def test_video_audio_text_and_animation_all_returned(tmp_path, target):
    runtime, settings = boot_runtime(tmp_path, real=target == "real")
    try:
        result = run(runtime, settings, {"workflow": MIXED})
        assert "error" not in result, result
        by_node = {o["node_id"]: o for o in outputs_with_data(result)}
        assert set(by_node) == {"2", "4", "6", "7"}, outputs_with_data(result)
        assert by_node["2"]["mime_type"] == "image/webp"
        assert by_node["4"]["kind"] == "audio" and by_node["4"]["mime_type"].startswith("audio/")
        assert by_node["6"]["kind"] == "video" and by_node["6"]["mime_type"].startswith("video/")
        assert by_node["7"]["kind"] == "text" and by_node["7"]["text"] == "a caption from the workflow"
        for entry in outputs_with_data(result):
            if entry["kind"] != "text":
                data = base64.b64decode(entry["data"])
                assert len(data) == entry["size"] > 0
                assert hashlib.sha256(data).hexdigest() == entry["sha256"]
    finally:
        runtime.shutdown()
