"""The long-lived connection to ComfyUI: the supervised process (or an attached URL), the HTTP client and
the event stream, with one answer to "can a job run now?"."""

from __future__ import annotations

import asyncio
import logging
import os
import time
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from ..errors import ErrorCode, WorkerError
from ..settings import Settings
from .client import ComfyClient, ComfyUnavailable
from .events import COMFY_EXITED, Event, EventStream
from .process import ComfyProcess

log = logging.getLogger("comfy_worker.comfy.runtime")


class ComfyRuntime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.client = ComfyClient(settings.base_url, settings.http_timeout)
        self.process = ComfyProcess(settings) if settings.manages_process else None
        self.events = EventStream(self.client.ws_url, reconnect_max=settings.ws_reconnect_max)
        self.events.history_fetcher = self.client.history
        self.boot_error: str | None = None
        self.boot_seconds: float | None = None
        self._boot_started = time.monotonic()
        self.catalogue_seconds: float | None = None
        self._catalogue: dict[str, Any] | None = None
        self._catalogue_generation = -1
        self._catalogue_lock = threading.Lock()
        self._output_classes: set[str] = set()
        self._models: dict[str, list[str]] | None = None
        self._models_at = 0.0
        # Per-job cleanup runs after the result is returned, one at a time, on its own thread.
        self._cleanup_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="job-cleanup")
        self._cleanups: set[Future[None]] = set()
        self._cleanup_lock = threading.Lock()
        if self.process is not None:
            self.process.add_exit_listener(self._on_exit)

    # --- start-up -------------------------------------------------------------------------------
    def boot(self) -> bool:
        """Start (or find) ComfyUI and wait until it answers. Never raises: a failure is kept for the first job."""
        self.start()
        return self.wait()

    def start(self) -> None:
        """Spawn ComfyUI without waiting for it, so the worker can do its own start-up meanwhile."""
        self._boot_started = time.monotonic()
        if self.process is None:
            return
        try:
            self.process.start()
        except OSError as exc:
            self.boot_error = str(exc)
            log.error("ComfyUI could not be started: %s", exc)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the started ComfyUI answers (at most COMFYUI_START_TIMEOUT from its start, and at most
        `timeout` from now), then connect the event stream and read the catalogue."""
        if self.boot_error is not None and self.process is not None and not self.process.is_alive():
            return False
        remaining = max(1.0, self.settings.comfyui_start_timeout - (time.monotonic() - self._boot_started))
        if timeout is not None:
            remaining = min(remaining, timeout)
        if self.process is not None:
            ready = self.process.wait_ready(remaining)
        else:
            ready = self._wait_attached(remaining)
        self.boot_seconds = time.monotonic() - self._boot_started
        if not ready:
            self.boot_error = self._not_ready_reason()
            log.error("ComfyUI is not ready: %s", self.boot_error)
            return False
        self.boot_error = None
        self.events.start()
        self.events.wait_connected(10)
        # Warm the catalogue (1-2 MB of node definitions) in the background: the worker is ready now, and a
        # first job that arrives meanwhile waits for this same fetch instead of starting another.
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

    def _wait_attached(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.client.system_stats(timeout=2)
                return True
            except ComfyUnavailable:
                time.sleep(0.2)
        return False

    def _not_ready_reason(self) -> str:
        if self.process is None:
            return f"no answer from {self.settings.base_url}"
        if not self.process.is_alive():
            return self.describe_exit()
        return f"ComfyUI did not answer within {time.monotonic() - self._boot_started:.0f} s"

    def describe_exit(self) -> str:
        """What became of a managed ComfyUI that is not running: its exit code and last log line."""
        if self.process is None:
            return f"no answer from {self.settings.base_url}"
        tail = [line for line in self.process.log_tail(40) if line.strip()]
        last = f"; its last log line: {tail[-1].strip()[:300]}" if tail else ""
        if self.process.pid is None:
            return "ComfyUI was never started" + last
        return f"ComfyUI exited with code {self.process.exit_code}{last}"

    @property
    def failure(self) -> str | None:
        """Why a managed ComfyUI cannot be brought back (None while it can)."""
        return self.process.failure if self.process is not None else None

    def verdict(self, timeout: float = 5.0) -> str | None:
        """Once ComfyUI went down: wait (bounded) for the supervisor's decision; the failure reason if it gave
        up, else None (it runs, or is being restarted)."""
        if self.process is None:
            return None
        self.process.wait_verdict(timeout)
        return self.process.failure

    def on_failure(self, listener: Callable[[str], None]) -> None:
        """Call `listener(reason)` once ComfyUI has died for good (the supervisor gave up)."""
        if self.process is not None:
            self.process.add_failure_listener(listener)

    def _on_exit(self, code: int) -> None:
        self.events.broadcast(Event(COMFY_EXITED, {"exit_code": code}))
        self.events.drop_connection()

    # --- per job --------------------------------------------------------------------------------
    def unavailable(self, reason: str, **details: object) -> WorkerError:
        tail = self.process.log_tail(30) if self.process else []
        return WorkerError(ErrorCode.COMFYUI_UNAVAILABLE, reason, {**details, "log_tail": tail})

    def _ready_now(self) -> bool:
        if self.process is not None:
            return self.process.is_ready()
        try:
            self.client.system_stats(timeout=5)
            return True
        except ComfyUnavailable:
            return False

    def ensure_ready(self) -> None:
        """Raise COMFYUI_UNAVAILABLE unless ComfyUI answers and the event stream is connected."""
        if not self._ready_now():
            if self.process is not None and (self.process.is_alive() or self.process.will_restart()):
                # Still starting or restarting: wait, but not longer than a boot is allowed to take.
                limit = self.settings.comfyui_start_timeout if self.boot_error is None else 5.0
                self.process.wait_until_ready(limit)
            if not self._ready_now():
                raise self.unavailable(f"ComfyUI is not available: {self.boot_error or self._not_ready_reason()}")
        self.boot_error = None
        if not self.events.wait_connected(10):
            raise self.unavailable("could not open ComfyUI's websocket")

    async def ensure_ready_async(self) -> None:
        if self.process is not None and self.process.is_ready() and self.events.connected:
            return  # the common case needs no HTTP call, so no thread hop either
        await asyncio.to_thread(self.ensure_ready)

    def catalogue(self) -> dict[str, Any]:
        """ComfyUI's /object_info, fetched once per ComfyUI boot (custom nodes only change with a restart)."""
        generation = self.process.generation if self.process else 0
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
        """Node types that are output nodes, from the same catalogue (computed once per catalogue)."""
        self.catalogue()
        return self._output_classes

    def model_lists(self) -> dict[str, list[str]]:
        """Files in every model folder, read fresh (files appear on a network volume at any time), from a
        few seconds' cache so a burst of jobs does not re-list them for each one."""
        now = time.monotonic()
        if self._models is not None and now - self._models_at < 5.0:
            return self._models
        try:
            folders = [f for f in self.client.models_folders() if f not in {"configs", "custom_nodes"}]
            with ThreadPoolExecutor(max_workers=8) as pool:
                lists = dict(zip(folders, pool.map(self._list_folder, folders)))
        except ComfyUnavailable as exc:
            raise self.unavailable(f"could not list ComfyUI's model folders: {exc}") from exc
        self._models, self._models_at = lists, now
        return lists

    def lists_cached(self) -> bool:
        """Whether the catalogue and fresh model lists are in memory (a pre-flight then needs no I/O)."""
        generation = self.process.generation if self.process else 0
        return (self._catalogue is not None and generation == self._catalogue_generation
                and self._models is not None and time.monotonic() - self._models_at < 5.0)

    def forget_model_lists(self) -> None:
        self._models = None

    def _list_folder(self, folder: str) -> list[str]:
        try:
            return self.client.models(folder)
        except ComfyUnavailable:
            return []

    def input_files(self, limit: int = 20000) -> list[str] | None:
        """Files already in ComfyUI's input folder (relative paths), when it is a local folder."""
        if not self.local_files or not self.settings.input_dir.is_dir():
            return None
        base = self.settings.input_dir
        files: list[str] = []
        # os.walk skips folders that vanish while it runs (another job's cleanup), where rglob would raise.
        for folder, _dirs, names in os.walk(base):
            rel = Path(folder).relative_to(base)
            for name in names:
                files.append((rel / name).as_posix())
                if len(files) >= limit:
                    return None
        return files

    def restart_comfyui(self) -> bool:
        """Kill a stuck ComfyUI; the supervisor starts a fresh one. Not possible when attached to a URL."""
        if self.process is None or not self.process.is_alive():
            return False
        self.process.kill()
        return True

    def is_alive(self) -> bool:
        if self.process is not None:
            return self.process.is_alive()
        return self._ready_now()

    @property
    def local_files(self) -> bool:
        """Whether ComfyUI's folders are this machine's folders (then files are read and removed on disk)."""
        s = self.settings
        return self.process is not None or bool(s.comfyui_output_dir or s.comfyui_input_dir)

    @property
    def folders(self) -> dict[str, Path]:
        s = self.settings
        return {"input": s.input_dir, "output": s.output_dir, "temp": s.temp_dir}

    def schedule_cleanup(self, task: Callable[[], None]) -> None:
        """Run a job's cleanup after its result has gone out; failures are logged, never raised."""
        def guarded() -> None:
            try:
                task()
            except Exception:
                log.exception("job cleanup failed")

        future = self._cleanup_pool.submit(guarded)
        with self._cleanup_lock:
            self._cleanups.add(future)
        future.add_done_callback(self._forget_cleanup)

    def _forget_cleanup(self, future: Future[None]) -> None:
        with self._cleanup_lock:
            self._cleanups.discard(future)

    def drain_cleanups(self, timeout: float = 60.0) -> bool:
        """Wait until every scheduled cleanup has run. True when none is left."""
        with self._cleanup_lock:
            pending = list(self._cleanups)
        done, not_done = wait(pending, timeout=timeout)
        return not not_done

    def shutdown(self) -> None:
        self.drain_cleanups()
        self._cleanup_pool.shutdown(wait=False)
        self.events.stop()
        if self.process is not None:
            self.process.stop()
        self.client.close()
