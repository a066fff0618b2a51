"""Progress of a running prompt, built from ComfyUI's events; `sdk.progress_sender` says where it goes.

The payload is small and JSON-only. Its ``percent`` never goes down, whatever order events arrive in.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from .comfy.events import Event

log = logging.getLogger("comfy_worker.progress")

Sender = Callable[[dict[str, Any]], None]


class ProgressTracker:
    def __init__(self, workflow: dict[str, Any], prompt_id: str, send: Sender, *,
                 min_interval: float = 0.5) -> None:
        self.workflow = workflow
        self.prompt_id = prompt_id
        self.send = send
        self.min_interval = min_interval
        self.total = max(1, len(workflow))
        self.cached: set[str] = set()
        self.finished: set[str] = set()
        self.node: str | None = None
        self.step: float | None = None
        self.step_max: float | None = None
        self.percent = 0.0
        self.stage = "queued"
        self._last_sent = 0.0
        self._last_key: tuple[Any, ...] | None = None

    def class_type(self, node: str | None) -> str | None:
        if node is None:
            return None
        entry = self.workflow.get(node) or self.workflow.get(node.split(".")[0])
        return entry.get("class_type") if isinstance(entry, dict) else None

    def on_event(self, event: Event) -> None:
        data = event.data
        if event.type == "execution_start":
            self.stage = "running"
        elif event.type == "execution_cached":
            self.cached = {str(n) for n in data.get("nodes", [])}
        elif event.type == "executing" and data.get("node") is not None:
            if self.node is not None and self.node != str(data["node"]):
                self.finished.add(self.node)
            self.node = str(data["node"])
            self.step = self.step_max = None
        elif event.type == "progress":
            self.node = str(data.get("node", self.node))
            self.step, self.step_max = data.get("value"), data.get("max")
        elif event.type == "progress_state":
            for node_id, state in (data.get("nodes") or {}).items():
                if isinstance(state, dict) and state.get("state") == "finished":
                    self.finished.add(str(node_id))
        elif event.type in {"execution_success", "executing"}:
            if self.node:
                self.finished.add(self.node)
        else:
            return
        self._update(force=event.type in {"execution_start", "execution_success"})

    def _update(self, force: bool = False) -> None:
        runnable = max(1, self.total - len(self.cached))
        done = len(self.finished - self.cached)
        fraction = 0.0
        if self.step is not None and self.step_max:
            fraction = min(1.0, float(self.step) / float(self.step_max))
        percent = min(99.0, 100.0 * (done + fraction) / runnable)
        self.percent = max(self.percent, round(percent, 1))
        payload: dict[str, Any] = {
            "stage": self.stage,
            "prompt_id": self.prompt_id,
            "node": self.node,
            "class_type": self.class_type(self.node),
            "step": self.step,
            "max_steps": self.step_max,
            "nodes_done": done,
            "nodes_total": runnable,
            "percent": self.percent,
        }
        key = (payload["node"], payload["step"], payload["percent"])
        now = time.monotonic()
        if key == self._last_key or (not force and now - self._last_sent < self.min_interval):
            return
        self._last_key = key
        self._last_sent = now
        try:
            self.send(payload)
        except Exception:  # progress must never fail a job
            log.exception("progress update failed")


class BatchProgress:
    """Combines the progress of a batch's prompts into one payload whose `percent` is the whole job's.
    With one prompt it passes payloads through unchanged."""

    def __init__(self, count: int, send: Sender) -> None:
        self.count = count
        self.send = send
        self.percents = [0.0] * count
        self.best = 0.0

    def sender(self, index: int) -> Sender:
        if self.count == 1:
            return self.send

        def send(payload: dict[str, Any]) -> None:
            self.percents[index] = payload.get("percent", 0.0)
            self.best = max(self.best, round(sum(self.percents) / self.count, 1))
            self.send({**payload, "item": index, "items": self.count, "item_percent": payload.get("percent"),
                       "percent": self.best})

        return send
