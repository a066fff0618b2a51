"""Seconds per stage of a job: each finished stage is one log line, and the result carries them all."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator

log = logging.getLogger("comfy_worker.job")


class Timings:
    def __init__(self) -> None:
        self.values: dict[str, float] = {}
        self._start = time.monotonic()

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        outcome = "failed"
        try:
            yield
            outcome = "ok"
        finally:
            seconds = time.monotonic() - started
            self.values[name] = round(self.values.get(name, 0.0) + seconds, 4)
            log.info("stage=%s outcome=%s seconds=%.4f", name, outcome, seconds)

    def total(self) -> dict[str, float]:
        return {**self.values, "total": round(time.monotonic() - self._start, 4)}
