"""The one interface between a job and ComfyUI.

A job asks ComfyUI for what it knows (its node catalogue, its model files), hands it input files, submits
prompts and follows each to its end, cancels them, reads their output files, and leaves nothing behind.
Everything ComfyUI-specific (HTTP routes, the websocket's events and their end signal, history polling
and stall detection, `/queue`'s wire format, interrupt-then-restart, where output files live) is behind
this interface, the way httpx keeps `BaseTransport` with its transports beside it:

    HttpComfy     (http.py)     over ComfyUI's HTTP API and websocket; two ways to have the server:
      ManagedComfy  (managed.py)  a ComfyUI this worker starts, supervises and restarts
      AttachedComfy (attached.py) a ComfyUI already running at a URL
    FakeComfy     (fake.py)     in-process, scripted: for unit tests of the job pipeline
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import WorkerError
from .events import Event

EventSink = Callable[[Event], None]


@dataclass(frozen=True)
class FileRef:
    """A file named in ComfyUI's history: its name, its subfolder and which folder (output, temp, input)."""

    filename: str
    subfolder: str
    type: str


@dataclass
class PromptOutcome:
    """How a prompt ended: its outputs (the history entry's, per output node) and the failure ComfyUI
    recorded for it, if any (EXECUTION_ERROR, OUT_OF_MEMORY, CANCELLED)."""

    prompt_id: str
    outputs: dict[str, Any]
    error: WorkerError | None = None


@dataclass
class JobFiles:
    """What a job left in ComfyUI, to be removed after its result has gone out."""

    prompt_ids: list[str] = field(default_factory=list)     # their history entries
    subfolders: list[str] = field(default_factory=list)     # of the input and output folders
    temp_files: list[FileRef] = field(default_factory=list)  # temp outputs (previews), returned or not
    unsettled: list[str] = field(default_factory=list)      # interrupted prompts that may still be stopping


class PromptWatch(ABC):
    """The events of one prompt, from before it is submitted (none is missed) to its end."""

    prompt_id: str

    @abstractmethod
    async def outcome(self, on_event: EventSink) -> PromptOutcome:
        """Pass every event to `on_event` until the prompt ends; its history entry is the truth.

        Raises WorkerError: COMFYUI_UNAVAILABLE (ComfyUI died or stopped answering), TIMEOUT (no event for
        STALL_TIMEOUT while running; the prompt is stopped)."""

    @abstractmethod
    def close(self) -> None:
        """Stop receiving this prompt's events."""


class ComfyConnection(ABC):
    """Everything a job needs from ComfyUI. Methods that do I/O block: the job calls them on a thread."""

    # --- readiness ---------------------------------------------------------------------------------
    @abstractmethod
    async def ready(self) -> None:
        """Return once a job can run (at once in the common case); COMFYUI_UNAVAILABLE if it cannot."""

    @abstractmethod
    def is_alive(self) -> bool:
        """Whether ComfyUI is running (or, attached, was answering a moment ago)."""

    # --- what ComfyUI knows --------------------------------------------------------------------------
    @abstractmethod
    def catalogue(self) -> dict[str, Any]:
        """`/object_info`: every node type with its inputs, kept until ComfyUI restarts."""

    @abstractmethod
    def output_classes(self) -> set[str]:
        """The node types that are output nodes."""

    @abstractmethod
    def model_lists(self) -> dict[str, list[str]]:
        """The files of every model folder, fresh to within seconds."""

    @abstractmethod
    def forget_model_lists(self) -> None:
        """Files were added (a download): the next model_lists() reads them again."""

    @abstractmethod
    def lists_cached(self) -> bool:
        """Whether the catalogue and model lists are in memory (a check of a graph then needs no I/O)."""

    @abstractmethod
    def input_files(self) -> list[str] | None:
        """Files already in ComfyUI's input folder, when the worker can see it (else None)."""

    # --- a job's prompts -----------------------------------------------------------------------------
    @abstractmethod
    def upload(self, name: str, data: bytes, subfolder: str) -> str:
        """Put an input file into ComfyUI's input folder; the name a loader node takes for it."""

    @abstractmethod
    def watch(self, prompt_id: str, graph: dict[str, Any], loop: asyncio.AbstractEventLoop) -> PromptWatch:
        """Start receiving a prompt's events: call before `submit`, so none is missed."""

    @abstractmethod
    def submit(self, prompt_id: str, graph: dict[str, Any], output_nodes: list[str] | None,
               extra_data: dict[str, Any] | None = None) -> list[str]:
        """Queue a prompt, with `extra_data` for its nodes (`api_key_comfy_org`: secrets that must reach
        ComfyUI's partner nodes and nothing else). Returns warnings (output branches ComfyUI skipped as invalid).

        Raises WorkerError: INVALID_WORKFLOW (refused, every node problem named), COMFYUI_UNAVAILABLE."""

    @abstractmethod
    def cancel(self, prompt_ids: list[str], *, settle: bool) -> bool:
        """Stop these prompts, and only these. With `settle`, wait for them to stop, and restart ComfyUI
        when they do not (returns whether it did), so the next job never waits behind them."""

    @abstractmethod
    def free_memory(self) -> bool:
        """Unload models and drop caches (after an out-of-memory, or when a job asks). Whether it was done."""

    @abstractmethod
    def locate(self, ref: FileRef, scratch: Path) -> Path:
        """The file of an output: ComfyUI's own when its folders are this machine's, else a copy streamed
        into `scratch`. Raises OSError (or WorkerError COMFYUI_UNAVAILABLE) when it cannot be read."""

    # --- afterwards ----------------------------------------------------------------------------------
    @abstractmethod
    def cleanup(self, files: JobFiles) -> None:
        """Remove what a job left: history entries, its input and output subfolders, temp files."""

    @abstractmethod
    def after_result(self, task: Callable[[], None]) -> None:
        """Run `task` once the job's result has gone out, off the job's path; failures are logged."""

    @abstractmethod
    def drain(self, timeout: float = 60.0) -> bool:
        """Wait until every task given to after_result has run. True when none is left."""
