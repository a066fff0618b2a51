"""A ComfyUI this worker starts, supervises and restarts (the image's way): its files are this machine's."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from ..settings import Settings
from .events import COMFY_EXITED, Event
from .http import HttpComfy
from .process import ComfyProcess

log = logging.getLogger("comfy_worker.comfy")


class ManagedComfy(HttpComfy):
    def __init__(self, settings: Settings, comfyui_args: Sequence[str] = ()) -> None:
        super().__init__(settings)
        self.process = ComfyProcess(settings, comfyui_args)
        self.process.add_exit_listener(self._on_exit)

    def start(self) -> None:
        super().start()
        try:
            self.process.start()
        except OSError as exc:
            self.boot_error = str(exc)
            log.error("ComfyUI could not be started: %s", exc)

    def _on_exit(self, code: int) -> None:
        # Jobs waiting on events learn it at once, and the socket reconnects to the next ComfyUI.
        self.events.broadcast(Event(COMFY_EXITED, {"exit_code": code}))
        self.events.drop_connection()

    # --- lifecycle hooks ---------------------------------------------------------------------------
    @property
    def generation(self) -> int:
        return self.process.generation

    @property
    def local_files(self) -> bool:
        return True

    def is_alive(self) -> bool:
        return self.process.is_alive()

    def _known_alive(self) -> bool:
        return self.process.is_ready()

    def _answering(self) -> bool:
        return self.process.is_ready()

    def _wait_answering(self, timeout: float) -> bool:
        if not self.process.is_alive():
            return False
        return self.process.wait_ready(timeout)

    def _await_restart(self) -> None:
        if self.process.is_alive() or self.process.will_restart():
            # Still starting or restarting: wait, but not longer than a boot may take.
            limit = self.settings.comfyui_start_timeout if self.boot_error is None else 5.0
            self.process.wait_until_ready(limit)

    def _not_ready_reason(self) -> str:
        if not self.process.is_alive():
            return self.describe_exit()
        return f"ComfyUI did not answer within {time.monotonic() - self._boot_started:.0f} s"

    def restart(self) -> bool:
        if not self.process.is_alive():
            return False
        self.process.kill()
        return True

    def log_tail(self, lines: int = 40) -> list[str]:
        return self.process.log_tail(lines)

    # --- what the worker's life depends on ---------------------------------------------------------
    def describe_exit(self) -> str:
        """What became of a ComfyUI that is not running: its exit code and last log line."""
        tail = [line for line in self.process.log_tail(40) if line.strip()]
        last = f"; its last log line: {tail[-1].strip()[:300]}" if tail else ""
        if self.process.pid is None:
            return "ComfyUI was never started" + last
        return f"ComfyUI exited with code {self.process.exit_code}{last}"

    @property
    def failure(self) -> str | None:
        """Why ComfyUI cannot be brought back (None while it can)."""
        return self.process.failure

    def verdict(self, timeout: float = 5.0) -> str | None:
        """After a job lost ComfyUI: wait (bounded) for the supervisor to restart it or give up; the reason
        when it gave up. A ComfyUI that just dropped a request may take a moment to be seen exiting."""
        deadline = time.monotonic() + timeout
        grace = time.monotonic() + 1.0
        while self.process.is_alive() and time.monotonic() < grace:
            time.sleep(0.02)
        self.process.wait_verdict(max(0.0, deadline - time.monotonic()))
        return self.process.failure

    def on_failure(self, listener: Callable[[str], None]) -> None:
        """Call `listener(reason)` once ComfyUI has died for good."""
        self.process.add_failure_listener(listener)

    def shutdown(self) -> None:
        super().shutdown()
        self.process.stop()
