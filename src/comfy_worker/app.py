"""Builds what the runpod SDK runs: settings, the ComfyUI runtime, the job handler and its start config."""

from __future__ import annotations

import asyncio
import atexit
import itertools
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from .comfy.runtime import ComfyRuntime
from .errors import ErrorCode, WorkerError
from .logs import configure_logging
from .settings import Settings, SettingsError

log = logging.getLogger("comfy_worker.app")

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


@dataclass
class WorkerApp:
    handler: Handler
    settings: Settings | None
    runtime: ComfyRuntime | None
    cold_start: dict[str, float] = field(default_factory=dict)

    @property
    def config(self) -> dict[str, Any]:
        """The config for `runpod.serverless.start`."""
        config: dict[str, Any] = {"handler": self.handler}
        if self.settings is not None:
            concurrency = self.settings.max_concurrency
            config["concurrency_modifier"] = lambda current: concurrency
            if self.settings.refresh_worker:
                config["refresh_worker"] = True
        return config


def create_worker(settings: Settings | None = None, *, boot: bool = True) -> WorkerApp:
    """Boot ComfyUI (bounded) and build the handler. A start-up failure never crashes the worker: it is
    reported, with its cause, to the caller of each job until it is resolved."""
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

        return WorkerApp(misconfigured, None, None)

    configure_logging(settings.log_level)
    runtime = ComfyRuntime(settings)
    atexit.register(runtime.shutdown)
    if boot:
        # ComfyUI takes seconds to boot: start it first, and load the rest of the worker meanwhile.
        runtime.start()
    from .job import run_job
    from .progress import runpod_sender

    counter = itertools.count(1)
    refresh_every = settings.refresh_worker_after_jobs

    async def handler(job: dict[str, Any]) -> dict[str, Any]:
        result = await run_job(job, runtime, settings, runpod_sender(job))
        if refresh_every and next(counter) % refresh_every == 0:
            log.info("job=%s asking RunPod for a fresh worker after %d jobs", job.get("id"), refresh_every)
            result["refresh_worker"] = True
        return result

    app = WorkerApp(handler, settings, runtime)
    if boot:
        import runpod  # noqa: F401  (the SDK takes over a second to import: it does so while ComfyUI boots)

        fetched = _fetch_start_models(settings)
        if fetched is not None:
            app.cold_start["start_models"] = round(fetched, 3)
        runtime.wait()
        app.cold_start["comfyui_boot"] = round(runtime.boot_seconds or 0.0, 3)
        if settings.warmup_workflow and runtime.boot_error is None:
            app.cold_start["warmup"] = round(_warm_up(settings, runtime), 3)
        app.cold_start["total"] = round(time.monotonic() - started, 3)
        log.info("cold start: %s; ComfyUI %s", json.dumps(app.cold_start),
                 "ready" if runtime.boot_error is None else f"NOT ready: {runtime.boot_error}")
    return app


def _fetch_start_models(settings: Settings) -> float | None:
    """Fetch the models.yaml entries marked `start` (to the network volume when there is one). A failure is
    logged, not fatal: jobs that need a missing model then fail with MISSING_MODELS naming it."""
    from .image.volume import model_download_root
    from .models.download import DownloadError, ensure_models, options_from_settings
    from .models.manifest import FetchWhen, load_manifest

    try:
        manifest = load_manifest(settings.models_manifest, missing_ok=True)
    except Exception as exc:  # a broken manifest must not keep the worker from serving other workflows
        log.error("models manifest %s unusable: %s", settings.models_manifest, exc)
        return None
    entries = manifest.select(FetchWhen.START)
    if not entries:
        return None
    started = time.monotonic()
    try:
        ensure_models(entries, model_download_root(settings), options=options_from_settings(settings))
    except DownloadError as exc:
        log.error("start-time model download failed: %s", exc)
    return time.monotonic() - started


def _warm_up(settings: Settings, runtime: ComfyRuntime) -> float:
    """Run the operator's warm-up workflow once, so the first real job finds its models loaded."""
    started = time.monotonic()
    assert settings.warmup_workflow is not None
    try:
        data = json.loads(settings.warmup_workflow.read_text())
    except (OSError, ValueError) as exc:
        log.error("warm-up workflow %s unreadable: %s", settings.warmup_workflow, exc)
        return 0.0
    job_input = data["input"] if isinstance(data, dict) and "input" in data else {"workflow": data}
    from .job import run_job

    result = asyncio.run(run_job({"id": "warmup", "input": job_input}, runtime, settings, lambda p: None))
    if "error" in result:
        log.error("warm-up workflow failed: %s", result["error"])
    return time.monotonic() - started
