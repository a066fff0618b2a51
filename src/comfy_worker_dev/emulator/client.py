"""A small synchronous ComfyUI client for the emulator and contract tests (requests + websocket-client)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import requests
import websocket

TIMEOUT = 10.0


@dataclass
class Events:
    """Text frames received on one websocket, collected by a background thread."""

    frames: list[dict[str, Any]] = field(default_factory=list)
    closed: threading.Event = field(default_factory=threading.Event)
    cond: threading.Condition = field(default_factory=threading.Condition)

    def types(self) -> list[str]:
        return [f["type"] for f in self.frames]

    def wait_for(self, predicate: Any, timeout: float = TIMEOUT) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        seen = 0
        with self.cond:
            while True:
                for frame in self.frames[seen:]:
                    if predicate(frame):
                        return frame
                seen = len(self.frames)
                left = deadline - time.monotonic()
                if left <= 0 or self.closed.is_set():
                    raise TimeoutError(f"no matching frame; got {self.types()}")
                self.cond.wait(left)

    def wait_done(self, prompt_id: str, timeout: float = TIMEOUT) -> dict[str, Any]:
        return self.wait_for(lambda f: f["type"] == "executing" and f["data"].get("node") is None
                             and f["data"].get("prompt_id") == prompt_id, timeout)


class ComfyClient:
    def __init__(self, url: str, client_id: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.client_id = client_id or uuid.uuid4().hex
        self.events = Events()
        self._ws: websocket.WebSocket | None = None

    def connect(self, feature_flags: dict[str, Any] | None = None) -> ComfyClient:
        """Open the websocket; `feature_flags` is sent as the first message, as ComfyUI's web app does."""
        ws_url = self.url.replace("http://", "ws://") + f"/ws?clientId={self.client_id}"
        self._ws = websocket.create_connection(ws_url, timeout=TIMEOUT)
        if feature_flags is not None:
            self._ws.send(json.dumps({"type": "feature_flags", "data": feature_flags}))
        self._ws.settimeout(None)
        threading.Thread(target=self._read, daemon=True).start()
        self.events.wait_for(lambda f: f["type"] == "status")
        return self

    def _read(self) -> None:
        assert self._ws is not None
        try:
            while True:
                opcode, data = self._ws.recv_data()
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    break
                if opcode == websocket.ABNF.OPCODE_TEXT:
                    frame = json.loads(data)
                elif opcode == websocket.ABNF.OPCODE_BINARY:  # previews: the raw frame, under type "binary"
                    frame = {"type": "binary", "data": bytes(data)}
                else:
                    continue
                with self.events.cond:
                    self.events.frames.append(frame)
                    self.events.cond.notify_all()
        except Exception:  # the socket closed or broke: the reader ends
            pass
        finally:
            self.events.closed.set()
            with self.events.cond:
                self.events.cond.notify_all()

    def close(self) -> None:
        if self._ws is not None:
            self._ws.close()

    def post_prompt(self, body: dict[str, Any]) -> requests.Response:
        body = {**body, "client_id": self.client_id}
        return requests.post(self.url + "/prompt", json=body, timeout=TIMEOUT)

    def run(self, body: dict[str, Any], timeout: float = TIMEOUT) -> tuple[str, list[dict[str, Any]]]:
        """Submit a prompt and wait for its end; returns (prompt_id, its frames)."""
        start = len(self.events.frames)
        resp = self.post_prompt(body)
        assert resp.status_code == 200, resp.text
        prompt_id = resp.json()["prompt_id"]
        self.events.wait_done(prompt_id, timeout)
        return prompt_id, self.events.frames[start:]

    def history(self, prompt_id: str) -> dict[str, Any]:
        return requests.get(f"{self.url}/history/{prompt_id}", timeout=TIMEOUT).json()

    def upload(self, name: str, data: bytes, overwrite: bool | None = None, subfolder: str | None = None
               ) -> requests.Response:
        form: dict[str, str] = {}
        if overwrite is not None:
            form["overwrite"] = "true" if overwrite else "false"
        if subfolder is not None:
            form["subfolder"] = subfolder
        return requests.post(self.url + "/upload/image", files={"image": (name, data, "image/png")},
                             data=form, timeout=TIMEOUT)

    def post(self, path: str, body: Any = None) -> requests.Response:
        return requests.post(self.url + path, json=body, timeout=TIMEOUT)

    def get(self, path: str, **params: Any) -> requests.Response:
        return requests.get(self.url + path, params=params or None, timeout=TIMEOUT)


def event_types(frames: list[dict[str, Any]], prompt_id: str | None = None) -> list[str]:
    """Event types of a prompt's frames, `status` broadcasts included, initial status excluded."""
    out = []
    for f in frames:
        if f["type"] == "status" and "sid" in f["data"]:
            continue
        out.append(f["type"])
    return out
