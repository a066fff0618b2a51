"""What the benchmark scripts share: import paths, the worker or ComfyUI under test, the workflow whose
output encodes its own job, and a minimal direct ComfyUI client to compare the worker against."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests
import websocket
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def target_name() -> str:
    return "real ComfyUI at " + os.environ["COMFYUI_DIR"] if os.environ.get("COMFYUI_DIR") else "emulator"


def color_workflow(color: int, size: int = 512, prefix: str = "bench") -> dict[str, Any]:
    """EmptyImage of `color` -> ImageInvert -> SaveImage: a distinct color makes each job really run (no
    cache hit) and lets its output prove which job it belongs to."""
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": size, "height": size, "batch_size": 1,
                                                      "color": color}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": prefix}},
    }


def expected_pixel(color: int) -> tuple[int, int, int]:
    """The pixel the color workflow's output must hold: the inverted color."""
    r, g, b = (color >> 16) & 0xFF, (color >> 8) & 0xFF, color & 0xFF
    return 255 - r, 255 - g, 255 - b


def pixel_of_png(data: bytes) -> tuple[int, int, int]:
    with Image.open(io.BytesIO(data)) as img:
        return tuple(img.convert("RGB").getpixel((0, 0)))  # type: ignore[return-value]


def same_pixel(got: tuple[int, int, int], color: int) -> bool:
    """Whether `got` is the color workflow's output for `color`; ComfyUI's float round trip (c/255, 1-x,
    x*255 truncated) may be one below on any channel."""
    return all(0 <= want - have <= 1 for have, want in zip(got, expected_pixel(color)))


def output_matches(result: dict[str, Any], color: int) -> bool:
    """Whether a successful worker result holds exactly one image whose pixels encode `color`."""
    from comfy_run import outputs_with_data  # src/ is on the path once a benchmark script has started

    outputs = outputs_with_data(result)
    if len(outputs) != 1 or not outputs[0].get("data"):
        return False
    return same_pixel(pixel_of_png(base64.b64decode(outputs[0]["data"])), color)


def comfy_execution_seconds(entry: dict[str, Any]) -> float | None:
    """ComfyUI's own execution time of a finished prompt, from the millisecond timestamps of its
    execution_start and execution_success messages in the history entry."""
    stamps = {name: data.get("timestamp") for name, data in (entry.get("status") or {}).get("messages") or []
              if isinstance(data, dict)}
    start, end = stamps.get("execution_start"), stamps.get("execution_success")
    return (end - start) / 1000 if isinstance(start, int) and isinstance(end, int) else None


def proc_stats() -> dict[str, int]:
    """This process's resident memory (kB) and open file descriptors, from /proc (no psutil)."""
    rss = 0
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    return {"rss_kb": rss, "fds": len(os.listdir("/proc/self/fd"))}


class DirectClient:
    """The least a caller must do to run a workflow on ComfyUI and get its images: one websocket, POST
    /prompt, wait for the prompt's end, GET /history, read the files and base64 them. The baseline the
    worker's overhead is measured against."""

    def __init__(self, base_url: str, output_dir: Path, timeout: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.output_dir = output_dir
        self.client_id = uuid.uuid4().hex
        self.last_entry: dict[str, Any] = {}
        self.session = requests.Session()
        ws_url = self.base_url.replace("http", "ws", 1) + f"/ws?clientId={self.client_id}"
        self.ws = websocket.create_connection(ws_url, timeout=timeout)

    def run(self, workflow: dict[str, Any]) -> list[str]:
        prompt_id = str(uuid.uuid4())
        resp = self.session.post(f"{self.base_url}/prompt", timeout=30, json={
            "prompt": workflow, "client_id": self.client_id, "prompt_id": prompt_id})
        if resp.status_code != 200:
            raise RuntimeError(f"ComfyUI refused the prompt: HTTP {resp.status_code}: {resp.text[:500]}")
        while True:
            frame = self.ws.recv()
            if isinstance(frame, bytes):
                continue  # previews
            message = json.loads(frame)
            data = message.get("data") or {}
            if data.get("prompt_id") != prompt_id:
                continue
            if message["type"] == "execution_error":
                raise RuntimeError(data.get("exception_message"))
            # History is written just before this last "executing" message.
            if message["type"] == "executing" and data.get("node") is None:
                break
        entry = self.session.get(f"{self.base_url}/history/{prompt_id}", timeout=30).json()[prompt_id]
        self.last_entry = entry
        images = []
        for output in entry["outputs"].values():
            for item in output.get("images", []):
                path = self.output_dir / item["subfolder"] / item["filename"]
                images.append(base64.b64encode(path.read_bytes()).decode())
        return images

    def close(self) -> None:
        self.ws.close()
        self.session.close()


def wait_http(url: str, deadline: float) -> bool:
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return True
        except requests.RequestException:
            pass
        time.sleep(0.02)
    return False


@contextlib.contextmanager
def local_seaweedfs() -> Iterator[Any]:
    """The test suite's SeaweedFS (tests/delivery/conftest.py) on free loopback ports, its data in a
    temporary folder that is removed afterwards: a delivery benchmark writes gigabytes there."""
    sys.path.insert(0, str(ROOT / "tests" / "delivery"))
    import conftest

    with tempfile.TemporaryDirectory(prefix="bench-seaweedfs-") as tmp:
        class _Folders:  # what the fixture asks of pytest's tmp_path_factory
            def mktemp(self, name: str) -> Path:
                return Path(tempfile.mkdtemp(prefix=name, dir=tmp))

        server = conftest.seaweedfs.__wrapped__(_Folders())  # type: ignore[attr-defined]
        try:
            yield next(server)
        finally:
            with contextlib.suppress(StopIteration):
                next(server)  # stops the server
