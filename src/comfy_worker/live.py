"""A job's live events: progress, latent previews, each output as it is delivered, and the end, numbered in
the order they happen and handed to the sinks the job has:

- RunPod's progress updates (`/status`): every job, as before; nothing else goes there;
- the stream (stream mode, STREAM_MODE): every event, as a chunk of RunPod's `/stream`;
- the caller's own URL (`events.url`): the event types it asked for, signed (webhooks.py).

A job with neither of the last two builds nothing beyond today's progress: ComfyUI is not asked for
previews, preview frames are dropped unread, no event is numbered or serialised.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from .comfy.connection import EventSink
from .comfy.events import Event, preview_image
from .media.previews import encode_preview
from .progress import ProgressTracker, Sender
from .schema import JobInput, OutputEntry, PreviewConfig
from .settings import Settings
from .webhooks import EventSender, check_events

log = logging.getLogger("comfy_worker.live")

Sink = Callable[[dict[str, Any]], None]
ALL_TYPES = frozenset({"progress", "preview", "output", "final"})
# An inline output's base64 larger than this stays out of its `output` event (RunPod caps a stream chunk at
# 1 MB); its bytes come with the result.
EVENT_INLINE_MAX = 512 * 1024


class LiveFeed:
    def __init__(self, job_id: str, send_progress: Sender, stream: Sink | None = None) -> None:
        self.job_id = job_id
        self.send_progress = send_progress
        self.stream = stream
        self.webhook: EventSender | None = None
        self.types: frozenset[str] = frozenset()
        self.previews: PreviewConfig | None = None
        self.seq = 0
        self._gate: _PreviewGate | None = None

    def configure(self, request: JobInput, settings: Settings, warnings: list[str]) -> None:
        """The sinks this request asks for (INVALID_INPUT when `events` cannot be honoured) and its previews."""
        if request.events is not None:
            check_events(request.events, settings)
            assert settings.events_secret is not None
            self.webhook = EventSender(request.events.url, settings.events_secret.get_secret_value().encode(),
                                       settings)
            self.types = frozenset(request.events.types or ALL_TYPES)
        previews = request.output_config.previews
        if isinstance(previews, PreviewConfig):
            if self.stream is None and "preview" not in self.types:
                warnings.append("output_config.previews: previews travel as live events, and this job has none "
                                "(the endpoint is not in stream mode, and no events.url takes previews)")
            else:
                self.previews = previews
                self._gate = _PreviewGate(previews, self._emit)

    @property
    def reporting(self) -> bool:
        """Whether delivered outputs are announced to anyone."""
        return self.stream is not None or "output" in self.types

    def comfy_extra_data(self) -> dict[str, Any]:
        """What the prompt's `extra_data` needs for this job's previews (ComfyUI's per-prompt preview method)."""
        return {"preview_method": self.previews.method} if self.previews else {}

    # --- events ------------------------------------------------------------------------------------------
    def _emit(self, kind: str, fields: dict[str, Any], *, stream: bool = True) -> bool:
        to_stream = stream and self.stream is not None
        to_hook = self.webhook is not None and kind in self.types
        if not (to_stream or to_hook):
            return False
        self.seq += 1
        event = {"event": kind, "job_id": self.job_id, "seq": self.seq, **fields}
        if to_stream:
            assert self.stream is not None
            self.stream(event)
        if to_hook:
            assert self.webhook is not None
            self.webhook.send(event)
        return True

    def progress(self, payload: dict[str, Any]) -> None:
        """The job's progress: to RunPod's `/status` as always, and as a `progress` event."""
        self.send_progress(payload)
        self._emit("progress", {"progress": payload})

    def output(self, entry: OutputEntry) -> bool:
        """Announce a delivered output; whether anyone was told."""
        if not self.reporting:
            return False
        omitted = entry.data is not None and len(entry.data) > EVENT_INLINE_MAX
        body = entry.model_dump(mode="json", exclude_none=True, exclude={"data"} if omitted else None)
        return self._emit("output", {"output": body, **({"data_omitted": True} if omitted else {})})

    def listener(self, graph: dict[str, Any], prompt_id: str, item: int | None, send: Sender,
                 on_executed: Callable[[str, int | None, Event], None]) -> EventSink:
        """What receives one prompt's events: its progress tracker, its previews, its finished output nodes."""
        tracker = ProgressTracker(graph, prompt_id, send)
        gate = self._gate
        if gate is None:
            def plain(event: Event) -> None:
                tracker.on_event(event)
                if event.type == "executed":
                    on_executed(prompt_id, item, event)

            return plain

        def with_previews(event: Event) -> None:
            tracker.on_event(event)
            if event.type == "preview":
                node = str(event.data.get("node_id") or tracker.node or "") or None
                gate.offer(event, {"prompt_id": prompt_id, "node": node, "class_type": tracker.class_type(node),
                                   "step": tracker.step, "max_steps": tracker.step_max,
                                   **({"item": item} if item is not None else {})})
            elif event.type in {"executing", "executed"}:
                gate.drop()  # the sampler is done: a preview still waiting would come after its results
                if event.type == "executed":
                    on_executed(prompt_id, item, event)

        return with_previews

    # --- the end -------------------------------------------------------------------------------------------
    def end(self, status: str, result: dict[str, Any] | None) -> None:
        """The job is over: no more previews; the `final` event to the caller's URL (the stream ends with the
        result itself, yielded by the handler)."""
        if self._gate is not None:
            self._gate.drop()
            self._gate = None
        if self.webhook is None or "final" not in self.types:
            return
        fields: dict[str, Any] = {"status": status}
        if result is not None and status == "COMPLETED":
            fields["output"] = {k: v for k, v in result.items() if k != "refresh_worker"}
        elif result is not None and "error" in result:
            fields["error"] = result["error"]
        self._emit("final", fields, stream=False)

    async def drain(self) -> None:
        """Wait for the caller's URL to take the remaining events, at most EVENTS_DRAIN_TIMEOUT."""
        if self.webhook is not None:
            await self.webhook.aclose()

    def drain_later(self) -> None:
        """`drain` in a task of its own (a cancelled job's task cannot wait for it)."""
        if self.webhook is not None:
            task = asyncio.get_running_loop().create_task(self.drain())
            _draining.add(task)
            task.add_done_callback(_draining.discard)


_draining: set[asyncio.Task[None]] = set()  # drains of cancelled jobs, kept until they end


class _PreviewGate:
    """At most `max_per_second` previews for the job: one goes out at once, the next waits its turn, and a
    newer frame replaces one that is waiting (the latest wins)."""

    def __init__(self, config: PreviewConfig, emit: Callable[[str, dict[str, Any]], bool]) -> None:
        self.config = config
        self.interval = 1.0 / config.max_per_second
        self.emit = emit
        self.last = float("-inf")
        self.waiting: tuple[Event, dict[str, Any]] | None = None
        self.timer: asyncio.TimerHandle | None = None

    def offer(self, event: Event, fields: dict[str, Any]) -> None:
        wait = self.last + self.interval - time.monotonic()
        if wait <= 0 and self.timer is None:
            self._send(event, fields)
            return
        self.waiting = (event, fields)
        if self.timer is None:
            self.timer = asyncio.get_running_loop().call_later(max(0.0, wait), self._flush)

    def _flush(self) -> None:
        self.timer = None
        if self.waiting is not None:
            event, fields = self.waiting
            self.waiting = None
            self._send(event, fields)

    def _send(self, event: Event, fields: dict[str, Any]) -> None:
        found = preview_image(event)
        if found is None:
            return
        c = self.config
        preview = encode_preview(found[0], found[1], fmt=c.format, max_size=c.max_size, quality=c.quality)
        if preview is None:
            log.debug("a preview frame could not be read; skipped")
            return
        self.last = time.monotonic()
        self.emit("preview", {**fields, "image": preview.data_uri, "width": preview.width,
                              "height": preview.height})

    def drop(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.waiting = None
