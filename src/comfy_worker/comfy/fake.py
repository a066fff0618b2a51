"""An in-process ComfyConnection for unit tests of the job pipeline, the way httpx keeps MockTransport beside
its transports: no server, no process, no network, and every call recorded.

It runs a submitted graph at once, in the order of its links: each node gets `executing` (and `progress`
for the steps of a sampler, each followed by a JPEG preview frame when the prompt's `extra_data` asks for a
preview method), each output node writes its files (a small PNG per image input, a text for a
text output) into the fake's output or temp folder and gets `executed`, then `execution_success` and the end
signal, exactly as ComfyUI orders them. A test makes a node fail, run out of memory or hang with `rule`, and
ComfyUI refuse a prompt with `refuse`.
"""

from __future__ import annotations

import asyncio
import io
import struct
import tempfile
import threading
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from ..errors import ErrorCode, WorkerError
from .connection import ComfyConnection, EventSink, FileRef, JobFiles, PromptOutcome, PromptWatch
from .events import Event
from .failures import history_error, rejected_error

Fault = Literal["error", "oom", "hang"]
# (index of the prompt among those submitted, node id, node) -> the fault to inject there, or None.
Rule = Callable[[int, str, dict[str, Any]], Fault | None]
_OOM_MESSAGE = "Allocation on device 0 would exceed allowed memory. (out of memory)"


class FakeComfy(ComfyConnection):
    def __init__(self, catalogue: dict[str, Any], *, models: dict[str, list[str]] | None = None,
                 root: Path | None = None, rule: Rule | None = None, step_seconds: float = 0.0) -> None:
        self._catalogue = catalogue
        self._models = models or {}
        self.root = root or Path(tempfile.mkdtemp(prefix="fake-comfyui-"))
        self.rule = rule
        self.step_seconds = step_seconds
        self.refuse: dict[str, Any] | None = None  # the body of ComfyUI's 400 answer to the next submit
        self.down = False  # ComfyUI not answering: ready() fails
        self.oom_until_free = False  # "oom" rules stop applying once free_memory() was called
        self.uploads: dict[str, bytes] = {}
        self.submitted: list[tuple[str, dict[str, Any], list[str] | None]] = []
        self.extra_data: list[dict[str, Any]] = []  # each submit's extra_data, in order
        self.cancelled: list[tuple[list[str], bool]] = []
        self.freed = 0
        self.cleaned: list[JobFiles] = []
        self._runs: dict[str, _Run] = {}
        self._lock = threading.Lock()
        for folder in ("input", "output", "temp"):
            (self.root / folder).mkdir(parents=True, exist_ok=True)

    # --- readiness and knowledge ------------------------------------------------------------------------
    async def ready(self) -> None:
        if self.down:
            raise WorkerError(ErrorCode.COMFYUI_UNAVAILABLE, "ComfyUI is not available: no answer (fake)",
                              {})

    def is_alive(self) -> bool:
        return not self.down

    def catalogue(self) -> dict[str, Any]:
        return self._catalogue

    def output_classes(self) -> set[str]:
        return {name for name, info in self._catalogue.items() if isinstance(info, dict) and info.get("output_node")}

    def model_lists(self) -> dict[str, list[str]]:
        return self._models

    def forget_model_lists(self) -> None:
        """Nothing to forget: the lists are the test's."""

    def lists_cached(self) -> bool:
        return True

    def input_files(self) -> list[str] | None:
        base = self.root / "input"
        return [p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file()]

    # --- prompts ------------------------------------------------------------------------------------------
    def upload(self, name: str, data: bytes, subfolder: str) -> str:
        target = self.root / "input" / subfolder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        reference = f"{subfolder}/{name}" if subfolder else name
        self.uploads[reference] = data
        return reference

    def watch(self, prompt_id: str, graph: dict[str, Any], loop: asyncio.AbstractEventLoop) -> PromptWatch:
        with self._lock:
            run = self._runs.setdefault(prompt_id, _Run(prompt_id, graph, loop))
        return _FakeWatch(self, run)

    def submit(self, prompt_id: str, graph: dict[str, Any], output_nodes: list[str] | None,
               extra_data: dict[str, Any] | None = None) -> list[str]:
        self.extra_data.append(dict(extra_data or {}))
        if self.refuse is not None:
            body, self.refuse = self.refuse, None
            raise rejected_error(body, graph)
        index = len(self.submitted)
        self.submitted.append((prompt_id, graph, output_nodes))
        with self._lock:
            run = self._runs[prompt_id]
        self._execute(run, index, (extra_data or {}).get("preview_method") not in (None, "none", "default"))
        run.loop.call_soon_threadsafe(run.ready.set)
        return []

    def cancel(self, prompt_ids: list[str], *, settle: bool) -> bool:
        self.cancelled.append((list(prompt_ids), settle))
        for prompt_id in prompt_ids:
            run = self._runs.get(prompt_id)
            if run is not None:
                run.loop.call_soon_threadsafe(run.interrupted.set)
        return False

    def free_memory(self) -> bool:
        self.freed += 1
        return True

    def locate(self, ref: FileRef, scratch: Path) -> Path:
        path = self.root / ref.type / ref.subfolder / ref.filename
        if not path.is_file():
            raise FileNotFoundError(f"{ref.type}/{ref.subfolder}/{ref.filename}")
        return path

    def cleanup(self, files: JobFiles) -> None:
        self.cleaned.append(files)

    def after_result(self, task: Callable[[], None]) -> None:
        task()

    def drain(self, timeout: float = 60.0) -> bool:
        return True

    # --- running a graph ----------------------------------------------------------------------------------
    def _execute(self, run: _Run, index: int, previews: bool = False) -> None:
        run.events.append(Event("execution_start", {"prompt_id": run.prompt_id}))
        run.events.append(Event("execution_cached", {"nodes": [], "prompt_id": run.prompt_id}))
        outputs: dict[str, Any] = {}
        for node_id in _in_link_order(run.graph):
            node = run.graph[node_id]
            fault = self.rule(index, node_id, node) if self.rule else None
            if fault == "oom" and self.oom_until_free and self.freed:
                fault = None
            run.events.append(Event("executing", {"node": node_id, "prompt_id": run.prompt_id}))
            if fault == "hang":
                run.hang_at = len(run.events)
            if fault in {"error", "oom"}:
                run.entry = self._failed(run, node_id, node, fault == "oom")
                return
            steps = (node.get("inputs") or {}).get("steps")
            for step in range(1, steps + 1 if isinstance(steps, int) else 1):
                run.events.append(Event("progress", {"value": step, "max": steps, "node": node_id,
                                                     "prompt_id": run.prompt_id}))
                if previews:  # as ComfyUI sends it to a client without `supports_preview_metadata`
                    frame = _preview_frame(step)
                    run.events.append(Event("preview", {"bytes": len(frame) - 8}, frame=frame))
            if node.get("class_type") in self.output_classes():
                outputs[node_id] = self._write_outputs(node)
                run.events.append(Event("executed", {"node": node_id, "output": outputs[node_id],
                                                     "prompt_id": run.prompt_id}))
        run.events.append(Event("execution_success", {"prompt_id": run.prompt_id}))
        run.events.append(Event("executing", {"node": None, "prompt_id": run.prompt_id}))
        run.entry = {"outputs": outputs, "status": {"status_str": "success", "completed": True, "messages": []}}

    def _failed(self, run: _Run, node_id: str, node: dict[str, Any], oom: bool) -> dict[str, Any]:
        data = {"prompt_id": run.prompt_id, "node_id": node_id, "node_type": node.get("class_type"),
                "exception_type": "torch.OutOfMemoryError" if oom else "RuntimeError",
                "exception_message": _OOM_MESSAGE if oom else f"node {node_id} failed (fake)",
                "traceback": [], "executed": []}
        run.events.append(Event("execution_error", data))
        return {"outputs": {}, "status": {"status_str": "error", "completed": False,
                                          "messages": [["execution_error", data]]}}

    def _write_outputs(self, node: dict[str, Any]) -> dict[str, Any]:
        """What an output node shows in the history: image files for image inputs, a text for the rest."""
        inputs = node.get("inputs") or {}
        kind = "temp" if str(node.get("class_type")).startswith("Preview") else "output"
        if "images" in inputs:
            prefix = str(inputs.get("filename_prefix", "ComfyUI"))
            subfolder, _, stem = prefix.rpartition("/")
            folder = self.root / kind / subfolder
            folder.mkdir(parents=True, exist_ok=True)
            count = len(list(folder.glob(f"{stem}_*_.png"))) + 1
            name = f"{stem}_{count:05}_.png"
            (folder / name).write_bytes(_png(8, 8, hash(prefix) & 0xFFFFFF))
            return {"images": [{"filename": name, "subfolder": subfolder, "type": kind}]}
        value = next((v for v in inputs.values() if isinstance(v, str)), "")
        return {"text": [value]}


class _Run:
    def __init__(self, prompt_id: str, graph: dict[str, Any], loop: asyncio.AbstractEventLoop) -> None:
        self.prompt_id = prompt_id
        self.graph = graph
        self.loop = loop
        self.events: list[Event] = []
        self.entry: dict[str, Any] | None = None
        self.hang_at: int | None = None
        self.ready = asyncio.Event()
        self.interrupted = asyncio.Event()


class _FakeWatch(PromptWatch):
    def __init__(self, comfy: FakeComfy, run: _Run) -> None:
        self.comfy = comfy
        self.run = run
        self.prompt_id = run.prompt_id

    async def outcome(self, on_event: EventSink) -> PromptOutcome:
        await self.run.ready.wait()
        for position, event in enumerate(self.run.events):
            if self.run.interrupted.is_set():
                return self._interrupted(on_event, event)
            if position == self.run.hang_at:
                await self.run.interrupted.wait()
                return self._interrupted(on_event, event)
            if self.comfy.step_seconds and event.type in {"executing", "progress"}:
                await asyncio.sleep(self.comfy.step_seconds)
            on_event(event)
        assert self.run.entry is not None
        return PromptOutcome(self.prompt_id, self.run.entry.get("outputs") or {},
                             history_error(self.run.entry, self.run.graph))

    def _interrupted(self, on_event: EventSink, at: Event) -> PromptOutcome:
        data = {"prompt_id": self.prompt_id, "node_id": at.data.get("node"), "node_type": None, "executed": []}
        on_event(Event("execution_interrupted", data))
        entry = {"outputs": {}, "status": {"status_str": "error", "completed": False,
                                           "messages": [["execution_interrupted", data]]}}
        return PromptOutcome(self.prompt_id, {}, history_error(entry, self.run.graph))

    def close(self) -> None:
        """Nothing to unsubscribe from."""


def _in_link_order(graph: dict[str, Any]) -> list[str]:
    """Node ids, each after the nodes its inputs link to (ComfyUI's execution order, up to ties)."""
    order: list[str] = []
    seen: set[str] = set()

    def visit(node_id: str) -> None:
        if node_id in seen or node_id not in graph:
            return
        seen.add(node_id)
        for value in (graph[node_id].get("inputs") or {}).values():
            if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
                visit(value[0])
        order.append(node_id)

    for node_id in graph:
        visit(node_id)
    return order


def _preview_frame(step: int) -> bytes:
    """A legacy preview frame (type 1, format 1: JPEG) of a 64x64 picture that changes with the step."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 64), ((step * 40) % 256, 90, 160)).save(buf, "JPEG", quality=80)
    return struct.pack(">II", 1, 1) + buf.getvalue()


def _png(width: int, height: int, rgb: int) -> bytes:
    """A tiny solid PNG, written without an image library (the fake must stay cheap to run)."""
    pixel = bytes(((rgb >> 16) & 255, (rgb >> 8) & 255, rgb & 255))
    raw = b"".join(b"\0" + pixel * width for _ in range(height))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    out = io.BytesIO()
    out.write(b"\x89PNG\r\n\x1a\n")
    out.write(chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)))
    out.write(chunk(b"IDAT", zlib.compress(raw)))
    out.write(chunk(b"IEND", b""))
    return out.getvalue()
