"""Access to the data captured from a real ComfyUI (tests/fixtures/comfyui)."""

import json
from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures"
CAPTURES = FIXTURES / "comfyui"


def capture(name: str):
    """A captured JSON file; HTTP captures are unwrapped to their JSON body."""
    data = json.loads((CAPTURES / name).read_text())
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


