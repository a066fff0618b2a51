"""ComfyConnection over ComfyUI's HTTP API and websocket (protocols.md Part A). The two ways of having the
server, started by the worker or attached to, differ only in the lifecycle hooks at the bottom."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import mimetypes
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from ..errors import ErrorCode, WorkerError
from ..settings import Settings
from .client import ComfyClient, ComfyUnavailable, PromptRejected
from .connection import ComfyConnection, EventSink, FileRef, JobFiles, PromptOutcome, PromptWatch
from .events import COMFY_EXITED, RECONNECTED, EventStream, Inbox
from .failures import history_error, node_label, rejected_error

log = logging.getLogger("comfy_worker.comfy")

# Model lists are read fresh (files appear on a network volume at any time), but not for every job of a burst.
_MODEL_LISTS_TTL = 5.0
_TERMINAL = {"execution_success", "execution_error", "execution_interrupted"}


class HttpComfy(ComfyConnection):
    """The HTTP client, the one websocket (routed by prompt id), the catalogue and model lists, and the
    after-result tasks, for one ComfyUI server."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.client = ComfyClient(settings.base_url, settings.http_timeout)
        self.events = EventStream(self.client.ws_url, reconnect_max=settings.ws_reconnect_max)
        self.boot_error: str | None = None
        self.boot_seconds: float | None = None
        self.catalogue_seconds: float | None = None
        self._boot_started = time.monotonic()
        self._catalogue: dict[str, Any] | None = None
        self._catalogue_generation = -1
        self._catalogue_lock = threading.Lock()
        self._output_classes: set[str] = set()
        self._models: dict[str, list[str]] | None = None
        self._models_at = 0.0
        # After-result tasks (cleanup) run one at a time, on a thread of their own.
        self._after = ThreadPoolExecutor(max_workers=1, thread_name_prefix="after-result")
        self._pending: set[Future[None]] = set()
        self._pending_lock = threading.Lock()

    # --- start-up ------------------------------------------------------------------------------------
    def start(self) -> None:
        """Begin the start (spawn ComfyUI when managed) without waiting for it."""
        self._boot_started = time.monotonic()

    def boot(self) -> bool:
        """Start and wait: for tools and tests that want a ready ComfyUI in one call."""
        self.start()
        return self.wait()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until ComfyUI answers (within COMFYUI_START_TIMEOUT of the start, and `timeout` from now),
        then open the websocket and load the catalogue in the background."""
        remaining = max(1.0, self.settings.comfyui_start_timeout - (time.monotonic() - self._boot_started))
        if timeout is not None:
            remaining = min(remaining, timeout)
        ready = self._wait_answering(remaining)
        self.boot_seconds = time.monotonic() - self._boot_started
        if not ready:
            self.boot_error = self._not_ready_reason()
            log.error("ComfyUI is not ready: %s", self.boot_error)
            return False
        self.boot_error = None
        self.events.start()
        self.events.wait_connected(10)
        # The catalogue (1-2 MB of node definitions) loads in the background: the worker is ready now, and
        # a first job that arrives meanwhile waits for this same fetch instead of starting another.
        threading.Thread(target=self._warm_catalogue, name="catalogue-warmup", daemon=True).start()
        log.info("ComfyUI ready in %.2f s at %s", self.boot_seconds, self.settings.base_url)
        return True

    def _warm_catalogue(self) -> None:
        loaded = time.monotonic()
        try:
            self.catalogue()
        except WorkerError as exc:
            log.warning("%s", exc.message)
        self.catalogue_seconds = time.monotonic() - loaded
        log.info("cold start: node catalogue loaded in %.2f s (%d node types)", self.catalogue_seconds,
                 len(self._catalogue or {}))

    # --- readiness -----------------------------------------------------------------------------------
    async def ready(self) -> None:
        # The common case is decided from state the websocket keeps: no HTTP call, no thread hop.
        if self.events.connected and self._known_alive():
            return
        await asyncio.to_thread(self._ensure_ready)

    def _ensure_ready(self) -> None:
        if not self._answering():
            self._await_restart()
            if not self._answering():
                raise self.unavailable(f"ComfyUI is not available: {self.boot_error or self._not_ready_reason()}")
        self.boot_error = None
        if not self.events.wait_connected(10):
            raise self.unavailable("could not open ComfyUI's websocket")

    def unavailable(self, reason: str, **details: object) -> WorkerError:
        # ComfyUI's log is shared by every job it ran: its tail goes to the operator's logs, not to a caller.
        tail = [line for line in self.log_tail(30) if line.strip()]
        if tail:
            log.error("%s; ComfyUI's last %d log lines:\n%s", reason, len(tail), "\n".join(tail))
        return WorkerError(ErrorCode.COMFYUI_UNAVAILABLE, reason, dict(details))

    # --- what ComfyUI knows --------------------------------------------------------------------------
    def catalogue(self) -> dict[str, Any]:
        generation = self.generation
        with self._catalogue_lock:
            if self._catalogue is None or generation != self._catalogue_generation:
                try:
                    self._catalogue = self.client.object_info()
                except ComfyUnavailable as exc:
                    raise self.unavailable(f"could not read ComfyUI's node catalogue: {exc}") from exc
                self._catalogue_generation = generation
                self._output_classes = {name for name, info in self._catalogue.items()
                                        if isinstance(info, dict) and info.get("output_node")}
            return self._catalogue

    def output_classes(self) -> set[str]:
        self.catalogue()
        return self._output_classes

    def model_lists(self) -> dict[str, list[str]]:
        now = time.monotonic()
        if self._models is not None and now - self._models_at < _MODEL_LISTS_TTL:
            return self._models
        try:
            folders = [f for f in self.client.models_folders() if f not in {"configs", "custom_nodes"}]
            with ThreadPoolExecutor(max_workers=8) as pool:
                lists = dict(zip(folders, pool.map(self._list_folder, folders)))
        except ComfyUnavailable as exc:
            raise self.unavailable(f"could not list ComfyUI's model folders: {exc}") from exc
        self._models, self._models_at = lists, now
        return lists

    def _list_folder(self, folder: str) -> list[str]:
        try:
            return self.client.models(folder)
        except ComfyUnavailable:
            return []

    def forget_model_lists(self) -> None:
        self._models = None

    def lists_cached(self) -> bool:
        return (self._catalogue is not None and self.generation == self._catalogue_generation
                and self._models is not None and time.monotonic() - self._models_at < _MODEL_LISTS_TTL)

    def input_files(self, limit: int = 20000) -> list[str] | None:
        base = self.settings.input_dir
        if not self.local_files or not base.is_dir():
            return None
        files: list[str] = []
        # os.walk skips folders that vanish while it runs (another job's cleanup), where rglob would raise.
        for folder, _dirs, names in os.walk(base):
            rel = Path(folder).relative_to(base)
            for name in names:
                files.append((rel / name).as_posix())
                if len(files) >= limit:
                    return None
        return files

    # --- a job's prompts -----------------------------------------------------------------------------
    def upload(self, name: str, data: bytes, subfolder: str) -> str:
        mime = mimetypes.guess_type(name)[0] or "application/octet-stream"
        try:
            answer = self.client.upload_image(name, data, subfolder=subfolder, overwrite=True, mime=mime)
        except ComfyUnavailable as exc:
            raise self.unavailable(f"could not upload input '{name}' to ComfyUI: {exc}", input=name) from exc
        # ComfyUI may rename a file: the name it answers is the one a loader must take.
        stored = answer.get("name") or name
        sub = answer.get("subfolder", subfolder) or ""
        return f"{sub}/{stored}" if sub else stored

    def watch(self, prompt_id: str, graph: dict[str, Any], loop: asyncio.AbstractEventLoop) -> PromptWatch:
        return _HttpWatch(self, prompt_id, graph, self.events.subscribe(prompt_id, loop))

    def submit(self, prompt_id: str, graph: dict[str, Any], output_nodes: list[str] | None,
               extra_data: dict[str, Any] | None = None) -> list[str]:
        try:
            answer = self.client.queue_prompt(graph, client_id=self.events.client_id, prompt_id=prompt_id,
                                              partial_execution_targets=output_nodes, extra_data=extra_data)
        except PromptRejected as exc:
            raise rejected_error(exc.body, graph) from None
        except ComfyUnavailable as exc:
            raise self.unavailable(f"ComfyUI did not accept the prompt: {exc}") from exc
        if answer.get("node_errors"):
            # Valid branches still run; the broken ones are named so that nothing is lost silently.
            bad = rejected_error({"node_errors": answer["node_errors"]}, graph)
            return [f"some output branches were skipped: {bad.message}"]
        return []

    def history(self, prompt_id: str) -> dict[str, Any] | None:
        try:
            return self.client.history(prompt_id)
        except ComfyUnavailable:
            return None

    def cancel(self, prompt_ids: list[str], *, settle: bool) -> bool:
        if not prompt_ids:
            return False
        try:
            self.client.delete_from_queue(prompt_ids)
            for prompt_id in prompt_ids:
                self.client.interrupt(prompt_id)
        except ComfyUnavailable as exc:
            log.warning("could not stop prompts %s: %s", prompt_ids, exc)
        return self._settle(prompt_ids) if settle else False

    def _settle(self, prompt_ids: list[str]) -> bool:
        deadline = time.monotonic() + self.settings.interrupt_grace
        wanted = set(prompt_ids)
        while time.monotonic() < deadline:
            try:
                queue = self.client.queue()
            except ComfyUnavailable:
                return False
            # /queue lists [number, prompt_id, prompt, extra_data, outputs] per prompt.
            if not any(len(item) > 1 and item[1] in wanted
                       for item in queue.get("queue_running", []) + queue.get("queue_pending", [])):
                return False
            time.sleep(0.2)
        log.error("prompts %s ignored the interrupt for %.0f s; restarting ComfyUI", prompt_ids,
                  self.settings.interrupt_grace)
        return self.restart()

    def free_memory(self) -> bool:
        try:
            self.client.free(unload_models=True, free_memory=True)
        except ComfyUnavailable as exc:
            log.warning("could not free ComfyUI's memory: %s", exc)
            return False
        return True

    def locate(self, ref: FileRef, scratch: Path) -> Path:
        if self.local_files:
            with contextlib.suppress(ValueError, KeyError, OSError):
                path = self.local_path(ref)
                if path.is_file():
                    return path
        scratch.mkdir(parents=True, exist_ok=True)
        target = scratch / f"{len(list(scratch.iterdir()))}-{Path(ref.filename).name}"
        try:
            self.client.view_to(ref.filename, ref.subfolder, ref.type, target)
        except ComfyUnavailable as exc:
            raise OSError(f"could not read {ref.type}/{ref.subfolder}/{ref.filename} from ComfyUI: {exc}") from exc
        return target

    def local_path(self, ref: FileRef) -> Path:
        return local_path(ref, self.folders)

    @property
    def folders(self) -> dict[str, Path]:
        s = self.settings
        return {"input": s.input_dir, "output": s.output_dir, "temp": s.temp_dir}

    # --- afterwards ----------------------------------------------------------------------------------
    def cleanup(self, files: JobFiles) -> None:
        if files.unsettled:
            # An interrupted prompt may still be finishing a node: files go once it has stopped.
            self._settle(files.unsettled)
        if files.prompt_ids:
            with contextlib.suppress(ComfyUnavailable):
                self.client.delete_history(files.prompt_ids)
        if not self.local_files:
            return
        for sub in files.subfolders:
            # ComfyUI's datasets folder too: the dataset savers write there (under the job's subfolder).
            roots = [*self.folders.values(), self.settings.comfyui_dir / "datasets"]
            for folder in job_folders(roots, sub):
                shutil.rmtree(folder, ignore_errors=True)
        for ref in files.temp_files:
            with contextlib.suppress(ValueError, KeyError, OSError):
                self.local_path(ref).unlink(missing_ok=True)

    def after_result(self, task: Callable[[], None]) -> None:
        def guarded() -> None:
            try:
                task()
            except Exception:
                log.exception("after-result task failed")

        future = self._after.submit(guarded)
        with self._pending_lock:
            self._pending.add(future)
        future.add_done_callback(self._forget)

    def _forget(self, future: Future[None]) -> None:
        with self._pending_lock:
            self._pending.discard(future)

    def drain(self, timeout: float = 60.0) -> bool:
        with self._pending_lock:
            pending = list(self._pending)
        _done, not_done = wait(pending, timeout=timeout)
        return not not_done

    def shutdown(self) -> None:
        self.drain()
        self._after.shutdown(wait=False)
        self.events.stop()
        self.client.close()

    # --- lifecycle hooks: how this worker has its ComfyUI ---------------------------------------------
    @property
    def generation(self) -> int:
        """Changes whenever ComfyUI restarts (its catalogue may then differ)."""
        return 0

    @property
    def local_files(self) -> bool:
        """Whether ComfyUI's folders are this machine's (then outputs are read and removed on disk)."""
        s = self.settings
        return bool(s.comfyui_output_dir or s.comfyui_input_dir)

    def is_alive(self) -> bool:
        return self._answering()

    def _known_alive(self) -> bool:
        """Alive as far as the worker knows without asking (the websocket being connected is a sign)."""
        return True

    def _answering(self) -> bool:
        try:
            self.client.system_stats(timeout=5)
            return True
        except ComfyUnavailable:
            return False

    def _wait_answering(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._answering():
                return True
            time.sleep(0.2)
        return False

    def _await_restart(self) -> None:
        """ComfyUI is down: wait for it when it is being brought back."""

    def _not_ready_reason(self) -> str:
        return f"no answer from {self.settings.base_url}"

    def restart(self) -> bool:
        """Replace a stuck ComfyUI with a fresh one; False when this worker cannot (attached)."""
        return False

    def log_tail(self, lines: int = 40) -> list[str]:
        return []


def local_path(ref: FileRef, folders: dict[str, Path]) -> Path:
    """Where a history file entry lives on disk, refusing anything that escapes its folder."""
    base = folders[ref.type].resolve()
    path = (base / ref.subfolder / ref.filename).resolve()
    if base != path and base not in path.parents:
        raise ValueError(f"output path escapes the {ref.type} folder: {ref.subfolder}/{ref.filename}")
    return path


class _HttpWatch(PromptWatch):
    """Follows one prompt: websocket events as they come, and `/history` as the truth, read at the end
    signal (`executing` with no node), after a reconnect (events missed meanwhile are gone), and when no
    event came for COMFY_HISTORY_POLL_INTERVAL."""

    def __init__(self, comfy: HttpComfy, prompt_id: str, graph: dict[str, Any], inbox: Inbox) -> None:
        self.comfy = comfy
        self.prompt_id = prompt_id
        self.graph = graph
        self.inbox = inbox
        self.node: str | None = None
        self.running = False

    async def outcome(self, on_event: EventSink) -> PromptOutcome:
        poll = self.comfy.settings.history_poll_interval
        terminal_seen = False
        last_news = time.monotonic()
        while True:
            events = await self.inbox.next_batch(0.5 if terminal_seen else poll)
            if not events:
                entry = await self._history()
                if entry is not None:
                    return self._outcome(entry)
                await self._check_alive_and_moving(last_news)
                continue
            last_news = time.monotonic()
            for event in events:
                if event.type == COMFY_EXITED:
                    raise self.comfy.unavailable(f"ComfyUI exited (code {event.data.get('exit_code')}) while "
                                                 "running the job; it is being restarted", prompt_id=self.prompt_id)
                if event.type == RECONNECTED:
                    entry = await self._history()
                    if entry is not None:
                        return self._outcome(entry)
                    continue
                on_event(event)
                self._note(event)
                if event.type in _TERMINAL:
                    terminal_seen = True
                elif event.type == "executing" and event.data.get("node") is None:
                    entry = await self._history(retries=20)
                    if entry is not None:
                        return self._outcome(entry)
                    terminal_seen = True

    def _note(self, event: Any) -> None:
        if event.type == "execution_start":
            self.running = True
        elif event.type in {"executing", "progress"} and event.data.get("node") is not None:
            self.node = str(event.data["node"])

    async def _check_alive_and_moving(self, last_news: float) -> None:
        if not self.comfy.is_alive():
            raise self.comfy.unavailable("ComfyUI stopped while running the job", prompt_id=self.prompt_id)
        stall = self.comfy.settings.stall_timeout
        if stall and self.running and time.monotonic() - last_news > stall:
            restarted = await asyncio.to_thread(self.comfy.cancel, [self.prompt_id], settle=True)
            raise WorkerError(ErrorCode.TIMEOUT, f"ComfyUI made no progress for {stall:g} s while running "
                              f"{node_label(self.graph, self.node or '?')}; the prompt was stopped"
                              + (" and ComfyUI restarted" if restarted else ""),
                              {"timeout": stall, "prompt_ids": [self.prompt_id], "comfyui_restarted": restarted,
                               "stalled": True, "stall_timeout": stall, "node_id": self.node})

    async def _history(self, retries: int = 1) -> dict[str, Any] | None:
        """The prompt's history entry (ComfyUI writes it once the prompt has ended), or None."""
        for attempt in range(retries):
            entry = await asyncio.to_thread(self.comfy.history, self.prompt_id)
            if entry is not None:
                return entry
            if attempt + 1 < retries:
                await asyncio.sleep(0.05)
        return None

    def _outcome(self, entry: dict[str, Any]) -> PromptOutcome:
        return PromptOutcome(self.prompt_id, entry.get("outputs") or {}, history_error(entry, self.graph))

    def close(self) -> None:
        self.comfy.events.unsubscribe(self.prompt_id)


def job_folders(roots: Iterable[Path], sub: str) -> list[Path]:
    """Every folder a job's files can be in: its subfolder of ComfyUI's input, output and temp folders, and
    the same subfolder under a node's own folder there (output/3d/<sub>, output/loras/<sub>, a dataset
    saver's folder), since every path a job's output nodes write to starts with the job's subfolder."""
    found: list[Path] = []
    for root in roots:
        for pattern in (sub, f"*/{sub}", f"*/*/{sub}"):
            found.extend(path for path in root.glob(pattern) if path.is_dir() and not path.is_symlink())
    return found
