"""Builds the handler the runpod SDK calls: settings, the ComfyUI runtime, and the job pipeline."""

from __future__ import annotations

import atexit
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from .comfy.runtime import ComfyRuntime
from .errors import ErrorCode, WorkerError
from .job import run_job
from .logs import configure_logging
from .progress import runpod_sender
from .settings import Settings, SettingsError

log = logging.getLogger("comfy_worker.app")

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


def build_handler(settings: Settings | None = None, *, boot: bool = True) -> tuple[Handler, ComfyRuntime | None]:
    """Boot ComfyUI (bounded) and return the async handler. A start-up failure never crashes the worker:
    it is reported, with its cause, to the caller of each job until it is resolved."""
    started = time.monotonic()
    try:
        settings = settings or Settings.from_env()
    except SettingsError as exc:
        configure_logging()
        log.error("%s", exc)
        message = str(exc)

        async def misconfigured(job: dict[str, Any]) -> dict[str, Any]:
            err = WorkerError(ErrorCode.INTERNAL_ERROR, f"the worker is misconfigured: {message}")
            return {"error": err.to_error_string(str(job.get("id")))}

        return misconfigured, None

    configure_logging(settings.log_level)
    runtime = ComfyRuntime(settings)
    atexit.register(runtime.shutdown)
    if boot:
        runtime.boot()
        log.info("worker ready in %.2f s (ComfyUI %s)", time.monotonic() - started,
                 "ready" if runtime.boot_error is None else f"NOT ready: {runtime.boot_error}")

    async def handler(job: dict[str, Any]) -> dict[str, Any]:
        return await run_job(job, runtime, settings, runpod_sender(job))

    return handler, runtime
