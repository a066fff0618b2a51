"""Access to the data captured from a real ComfyUI (tests/fixtures/comfyui)."""

import json
from pathlib import Path

from comfy_worker_dev.emulator.catalogue import OBJECT_INFO_PATH

FIXTURES = Path(__file__).parent / "fixtures"
CAPTURES = FIXTURES / "comfyui"


def capture_path(name: str) -> Path:
    """Where a capture lies: the object_info capture is the emulator's own catalogue, the rest are here."""
    if name == "object_info.json":
        return OBJECT_INFO_PATH
    return CAPTURES / name


def capture(name: str):
    """A captured JSON file; HTTP captures are unwrapped to their JSON body."""
    data = json.loads(capture_path(name).read_text())
    if isinstance(data, dict) and "json" in data and "status" in data:
        return data["json"]
    return data


def ws_transcript(name: str) -> list[dict]:
    frames = []
    for line in (CAPTURES / name).read_text().splitlines():
        record = json.loads(line)
        if record.get("kind") == "text":
            frames.append(record["data"])
    return frames


