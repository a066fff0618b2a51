"""ComfyUI's websocket: typed events, and one long-lived stream per worker that routes them to jobs.

The worker keeps one socket under one client_id and routes every event by its prompt_id, so jobs that
overlap never see each other's events. ComfyUI does not replay events missed while disconnected
(protocols.md §A10.1), so after every reconnect each job is told to reconcile with ``/history``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import websocket

log = logging.getLogger("comfy_worker.comfy.events")

# Synthetic events the stream adds to ComfyUI's own.
RECONNECTED = "worker.reconnected"
COMFY_EXITED = "worker.comfyui_exited"

# Binary frame types (protocols.md §A10.3).
BINARY_PREVIEW = 1
BINARY_TEXT = 3
BINARY_PREVIEW_WITH_METADATA = 4


@dataclass(frozen=True)
class Event:
    type: str
    data: dict[str, Any] = field(default_factory=dict)
    received_at: float = field(default_factory=time.monotonic)
    # A preview frame as received (the socket's own bytes object: kept, never copied); see `preview_image`.
    frame: bytes | None = field(default=None, repr=False, compare=False)

    @property
    def prompt_id(self) -> str | None:
        value = self.data.get("prompt_id")
        return value if isinstance(value, str) else None

    @property
    def node(self) -> str | None:
        value = self.data.get("node", self.data.get("node_id"))
        return None if value is None else str(value)


def parse_text_frame(text: str) -> Event | None:
    try:
        message = json.loads(text)
    except ValueError:
        log.warning("ignoring a websocket frame that is not JSON")
        return None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        return None
    data = message.get("data")
    return Event(message["type"], data if isinstance(data, dict) else {})


def parse_binary_frame(payload: bytes) -> Event | None:
    """Binary frames: previews and progress text. A preview keeps a reference to its frame (no copy); its
    image is cut out only for a job that asked for previews (`preview_image`)."""
    if len(payload) < 4:
        return None
    kind = struct.unpack(">I", payload[:4])[0]
    if kind == BINARY_PREVIEW_WITH_METADATA and len(payload) >= 8:
        size = struct.unpack(">I", payload[4:8])[0]
        try:
            meta = json.loads(payload[8:8 + size])
        except ValueError:
            return None
        return Event("preview", {**meta, "bytes": len(payload) - 8 - size}, frame=payload)
    if kind == BINARY_PREVIEW:
        return Event("preview", {"bytes": len(payload) - 8}, frame=payload)
    if kind == BINARY_TEXT and len(payload) >= 8:
        size = struct.unpack(">I", payload[4:8])[0]
        node = payload[8:8 + size].decode("utf-8", "replace")
        return Event("progress_text", {"node": node, "text": payload[8 + size:].decode("utf-8", "replace")})
    return None


_PREVIEW_TYPES = {1: "image/jpeg", 2: "image/png"}


def preview_image(event: Event) -> tuple[str, bytes] | None:
    """The image of a preview event: (MIME type, bytes). ComfyUI sends a legacy frame (type 1: image format
    number, then the image) unless the client declared `supports_preview_metadata`, and then type 4
    (metadata JSON with `image_type`, node and prompt ids, then the image); protocols.md §A10.3."""
    frame = event.frame
    if event.type != "preview" or frame is None or len(frame) < 8:
        return None
    kind = struct.unpack(">I", frame[:4])[0]
    if kind == BINARY_PREVIEW:
        mime = _PREVIEW_TYPES.get(struct.unpack(">I", frame[4:8])[0])
        return (mime, frame[8:]) if mime else None
    if kind == BINARY_PREVIEW_WITH_METADATA:
        size = struct.unpack(">I", frame[4:8])[0]
        mime = str(event.data.get("image_type") or "image/jpeg")
        return mime, frame[8 + size:]
    return None


def _release(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class Inbox:
    """Events of one prompt on their way from the socket's thread to the job's event loop.

    ComfyUI sends a prompt's events in bursts. The loop is woken once per burst and the job takes the
    whole burst at once: no thread switch, task or timer per event, which on a small machine is CPU taken
    from ComfyUI itself while it runs the prompt."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._events: list[Event] = []
        self._lock = threading.Lock()
        self._wake_pending = False
        self._waiter: asyncio.Future[None] | None = None

    def push(self, event: Event) -> None:
        """Called from any thread."""
        with self._lock:
            self._events.append(event)
            if self._wake_pending:
                return  # the wake-up on its way takes this event along
            self._wake_pending = True
        try:
            self.loop.call_soon_threadsafe(self._wake)
        except RuntimeError:  # the job's loop is gone
            pass

    def _wake(self) -> None:
        with self._lock:
            self._wake_pending = False
        if self._waiter is not None:
            _release(self._waiter)

    def take(self) -> list[Event]:
        """Every event received so far, oldest first; empty when there is none."""
        with self._lock:
            events, self._events = self._events, []
        return events

    async def next_batch(self, timeout: float) -> list[Event]:
        """The events received so far, waiting up to `timeout` seconds for the first; [] when none came."""
        deadline = self.loop.time() + timeout
        while True:
            events = self.take()
            remaining = deadline - self.loop.time()
            if events or remaining <= 0:
                return events
            self._waiter = waiter = self.loop.create_future()
            timer = self.loop.call_later(remaining, _release, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiter = None


class EventStream:
    """A background thread that keeps the websocket open and routes events to subscribed prompts."""

    def __init__(self, ws_url: str, *, reconnect_max: float = 2.0, client_id: str | None = None) -> None:
        self.client_id = client_id or uuid.uuid4().hex
        self._url = f"{ws_url}?clientId={self.client_id}"
        self._reconnect_max = reconnect_max
        self._subs: dict[str, Inbox] = {}
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ws: websocket.WebSocket | None = None
        self._running_prompt: str | None = None
        self.reconnects = 0

    # --- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="comfyui-ws", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        ws = self._ws
        if ws is not None:
            try:
                ws.close()
            except Exception:
                pass
        if self._thread:
            self._thread.join(timeout=5)

    def wait_connected(self, timeout: float) -> bool:
        self.start()
        return self._connected.wait(timeout)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def drop_connection(self) -> None:
        """Close the socket; the stream reconnects by itself (used when ComfyUI restarts)."""
        ws = self._ws
        if ws is not None:
            try:
                ws.abort() if hasattr(ws, "abort") else ws.close()
            except Exception:
                pass

    # --- routing --------------------------------------------------------------------------------
    def subscribe(self, prompt_id: str, loop: asyncio.AbstractEventLoop) -> Inbox:
        inbox = Inbox(loop)
        with self._lock:
            self._subs[prompt_id] = inbox
        return inbox

    def unsubscribe(self, prompt_id: str) -> None:
        with self._lock:
            self._subs.pop(prompt_id, None)

    def broadcast(self, event: Event) -> None:
        with self._lock:
            subs = list(self._subs.values())
        for sub in subs:
            sub.push(event)

    def _route(self, event: Event) -> None:
        prompt_id = event.prompt_id
        if event.type == "execution_start" and prompt_id:
            self._running_prompt = prompt_id
        if prompt_id is None and event.type in {"preview", "progress_text"}:
            # Legacy previews and progress text carry no prompt id: they belong to the running prompt.
            prompt_id = self._running_prompt
        if prompt_id is None:
            return
        with self._lock:
            sub = self._subs.get(prompt_id)
        if sub is not None:
            sub.push(event)
        if event.type == "executing" and event.data.get("node") is None and prompt_id == self._running_prompt:
            self._running_prompt = None

    # --- the thread -----------------------------------------------------------------------------
    def _run(self) -> None:
        delay = 0.05
        first = True
        while not self._stop.is_set():
            try:
                # Frames are decoded with "replace" below; websocket-client's own UTF-8 check is pure Python,
                # byte by byte, and would cost more than everything else done with a frame.
                ws = websocket.create_connection(self._url, timeout=5, enable_multithread=True,
                                                 skip_utf8_validation=True)
            except Exception as exc:
                log.debug("websocket connect failed: %s", exc)
                self._stop.wait(delay)
                delay = min(self._reconnect_max, delay * 2)
                continue
            delay = 0.05
            self._ws = ws
            ws.settimeout(1.0)
            self._connected.set()
            if not first:
                self.reconnects += 1
                log.warning("websocket reconnected (%d); jobs reconcile with /history", self.reconnects)
                self.broadcast(Event(RECONNECTED))
            first = False
            self._read(ws)
            self._connected.clear()
            self._ws = None
            try:
                ws.close()
            except Exception:
                pass

    def _read(self, ws: websocket.WebSocket) -> None:
        while not self._stop.is_set():
            try:
                opcode, payload = ws.recv_data()
            except websocket.WebSocketTimeoutException:
                continue
            except Exception as exc:
                if not self._stop.is_set():
                    log.warning("websocket dropped: %s", exc or type(exc).__name__)
                return
            if opcode == websocket.ABNF.OPCODE_TEXT:
                event = parse_text_frame(payload.decode("utf-8", "replace"))
            elif opcode == websocket.ABNF.OPCODE_BINARY:
                event = parse_binary_frame(payload)
            elif opcode == websocket.ABNF.OPCODE_CLOSE:
                if not self._stop.is_set():
                    log.warning("websocket closed by ComfyUI")
                return
            else:
                continue
            if event is not None:
                self._route(event)
