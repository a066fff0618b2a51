"""A ComfyUI already running at a URL (COMFYUI_URL, development): the worker neither starts nor restarts it,
and reads its output files over `/view` unless its folders are given as this machine's."""

from __future__ import annotations

from collections.abc import Callable

from .http import HttpComfy


class AttachedComfy(HttpComfy):
    def _known_alive(self) -> bool:
        # The websocket stays open while the server runs and drops when it goes: being connected is the
        # answer, with no HTTP call per job.
        return self.events.connected

    def is_alive(self) -> bool:
        # Asked after every job: the open websocket answers it; only a dropped one costs a request.
        return self.events.connected or self._answering()

    def describe_exit(self) -> str:
        return f"no answer from {self.settings.base_url}"

    @property
    def failure(self) -> str | None:
        return None

    def verdict(self, timeout: float = 5.0) -> str | None:
        return None

    def on_failure(self, listener: Callable[[str], None]) -> None:
        """An attached ComfyUI is not this worker's to give up on."""
