"""Start-up and the worker's life: settings, ComfyUI ready within one start budget (or the worker ends
without taking a job), the job handler, and what makes the worker end after a job.

Order at start (docs/runpod.md): settings → ComfyUI spawned → the runpod SDK imported meanwhile → `start`
models fetched → ComfyUI answers → its device checked → deployed workflows checked → warm-up → ready. All of it
within `Settings.start_budget`, which stays below RunPod's own init timeout.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import itertools
import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from . import __version__, sdk
from .comfy import AttachedComfy, ManagedComfy, connect
from .deployments import Deployments, load_deployments
from .logs import configure_logging
from .models.cache import comfyui_model_paths_args
from .settings import Settings, SettingsError

log = logging.getLogger("comfy_worker.app")

Handler = Callable[[dict[str, Any]], Any]  # a coroutine function, or an async generator one in stream mode
Chunk = Callable[[dict[str, Any]], None]
Comfy = ManagedComfy | AttachedComfy
# Seconds a worker that must end waits after its last job, so the SDK's post of that job's result goes out.
_RESULT_GRACE = 3.0


@dataclass
class WorkerApp:
    handler: Handler
    settings: Settings | None
    comfy: Comfy | None
    cold_start: dict[str, float] = field(default_factory=dict)
    unfit: str | None = None  # why this worker cannot run jobs; it then ends instead of taking any
    ending: str | None = None  # why this worker ends after the job in flight
    in_flight: int = 0
    last_job_ended: float = 0.0
    deployments: Deployments | None = None  # the workflows requests run by name, checked at start
    _config: dict[str, Any] | None = None

    @property
    def config(self) -> dict[str, Any]:
        """The config for `runpod.serverless.start`. One dict for the worker's life: the SDK keeps this very
        object, and `end_after_job` sets its `refresh_worker` flag, which makes the SDK post the result with
        `stopPod` and then leave its job loop."""
        if self._config is None:
            config: dict[str, Any] = {"handler": self.handler}
            if self.settings is not None and self.settings.stream_mode:
                config["return_aggregate_stream"] = True  # /runsync and /status: the list of chunks
            if self.settings is not None:
                concurrency = self.settings.max_concurrency
                config["concurrency_modifier"] = lambda current: concurrency
                if self.settings.refresh_worker:
                    config["refresh_worker"] = True
            self._config = config
        return self._config

    def end_after_job(self, reason: str) -> None:
        """Take no further job: the result in flight goes out with `stopPod`, then the SDK's loop ends."""
        if self.ending is None:
            log.warning("this worker takes no further job: %s", reason)
            self.ending = reason
        self.config["refresh_worker"] = True

    def check_fitness(self) -> None:
        """The worker's start-up check, run by the SDK before its first job-take (production only)."""
        if self.unfit:
            raise RuntimeError(self.unfit)
        if self.comfy is not None and not self.comfy.is_alive():
            raise RuntimeError(f"ComfyUI stopped before the first job: {self.comfy.describe_exit()}")

    def serve(self) -> None:
        """Hand the worker to the runpod SDK. A worker that cannot run jobs takes none: in production the
        failing fitness check is reported to RunPod and ends the process; in the local modes it exits 1."""
        import runpod

        if self.unfit and not sdk.production_mode():
            log.error("the worker cannot run jobs and ends: %s", self.unfit)
            sys.exit(1)  # atexit stops ComfyUI
        sdk.register_fitness(self.check_fitness)
        if self.comfy is not None:
            self.comfy.on_failure(self._comfyui_lost)
        runpod.serverless.start(self.config)

    def _comfyui_lost(self, reason: str) -> None:
        """ComfyUI died and cannot be brought back. A job in flight gets its error first; an idle worker
        ends now, so that it never takes a job it cannot run."""
        if self.in_flight:
            self.end_after_job(f"ComfyUI cannot be brought back: {reason}")
            return
        # The SDK posts a job's result right after the handler returns: let a just-finished one go out.
        time.sleep(max(0.0, self.last_job_ended + _RESULT_GRACE - time.monotonic()))
        if self.in_flight or self.ending:
            self.end_after_job(f"ComfyUI cannot be brought back: {reason}")
            return
        log.error("ComfyUI cannot be brought back (%s); the worker ends so that RunPod replaces it", reason)
        _log_comfyui_tail(self.comfy)
        _flush_and_exit(1)


def create_worker(settings: Settings | None = None, *, boot: bool = True) -> WorkerApp:
    """Boot ComfyUI within the start budget and build the handler. Never raises: a worker that cannot run
    jobs comes back with `unfit` set, its reason logged, and `serve()` ends it."""
    started = time.monotonic()
    try:
        settings = settings or Settings.from_env()
    except SettingsError as exc:
        configure_logging()
        unfit = f"the worker is misconfigured: {exc}"
        log.error("comfy-worker %s: the worker cannot start: %s", __version__, unfit)
        return WorkerApp(_refuse, None, None, unfit=unfit)

    configure_logging(settings.log_level)
    sdk.disable_sdk_checks()
    settings = _local_cpu_fallback(settings)
    # Every model folder of ComfyUI mapped onto the network volume, when one is mounted; the model cache too.
    comfy = connect(settings, comfyui_model_paths_args(settings) if settings.manages_process else ())
    atexit.register(comfy.shutdown)
    if boot:
        comfy.start()  # ComfyUI takes seconds to boot: the rest of the start-up happens meanwhile
    app = WorkerApp(_refuse, settings, comfy)
    app.handler = _job_handler(app, settings, comfy)
    if not boot:
        return app
    sdk.import_sdk()  # the SDK takes most of a second to import: it does so while ComfyUI boots

    sdk.redact_sdk_logs()
    deadline = started + settings.start_budget
    app.unfit = _start(app, settings, comfy, deadline)
    app.cold_start["total"] = round(time.monotonic() - started, 3)
    # The version leads both lines, so that a worker's log says which release it runs before anything else.
    if app.unfit:
        log.error("comfy-worker %s: the worker cannot start: %s", __version__, app.unfit)
        _log_comfyui_tail(comfy)
    else:
        log.info("comfy-worker %s: cold start: %s; ready to take jobs", __version__, json.dumps(app.cold_start))
    return app


def _start(app: WorkerApp, settings: Settings, comfy: Comfy, deadline: float) -> str | None:
    """Everything between spawning ComfyUI and taking the first job. Returns why the worker is unfit."""
    budget = settings.start_budget
    fetched = _fetch_start_models(settings, deadline)
    if fetched is None:
        return f"the start-up model downloads did not finish within the start budget of {budget:.0f} s"
    if fetched:
        app.cold_start["start_models"] = round(fetched, 3)
    comfy.wait(max(1.0, deadline - time.monotonic()))
    app.cold_start["comfyui_boot"] = round(comfy.boot_seconds or 0.0, 3)
    if comfy.boot_error is not None:
        return f"ComfyUI is not ready: {comfy.boot_error}"
    problem = _device_problem(settings, comfy)
    if problem:
        return problem
    app.deployments = load_deployments(settings, comfy)  # a broken one is logged and refused, the rest serve
    app.cold_start["deployments"] = app.deployments.seconds
    if settings.warmup_workflow:
        seconds = _warm_up(settings, comfy, deadline - time.monotonic(), app.deployments.trusted())
        if seconds is None:
            return f"the warm-up workflow did not finish within the start budget of {budget:.0f} s"
        app.cold_start["warmup"] = round(seconds, 3)
    if time.monotonic() > deadline:
        return f"the start took longer than its budget of {budget:.0f} s"
    return None


async def _refuse(job: dict[str, Any]) -> dict[str, Any]:
    raise RuntimeError("this worker cannot run jobs")  # never reached: an unfit worker takes no job


def _job_handler(app: WorkerApp, settings: Settings, comfy: Comfy) -> Handler:
    """The SDK's handler: a coroutine returning the result, or in stream mode (STREAM_MODE) an async generator
    yielding the job's live events and then the result. The runpod SDK tells them apart by type."""
    from .job import run_job

    counter = itertools.count(1)
    refresh_every = settings.refresh_worker_after_jobs

    async def run_one(job: dict[str, Any], stream: Chunk | None) -> dict[str, Any]:
        app.in_flight += 1
        send, poster = sdk.progress_sender(job)
        try:
            try:
                result = await run_job(job, comfy, settings, send, deployments=app.deployments, stream=stream)
            finally:
                if poster is not None:
                    await poster.aclose()  # no progress post may arrive after the result
            if result.get("refresh_worker"):
                app.end_after_job("the GPU is in a bad state after this job")
            if refresh_every and next(counter) % refresh_every == 0:
                result["refresh_worker"] = True
                app.end_after_job(f"a fresh worker is due after {refresh_every} jobs (REFRESH_WORKER_AFTER_JOBS)")
            if not comfy.is_alive() or '"COMFYUI_UNAVAILABLE"' in str(result.get("error", "")):
                failure = await asyncio.to_thread(comfy.verdict)
                if failure is not None:
                    app.end_after_job(f"ComfyUI cannot be brought back: {failure}")
            return result
        finally:
            app.in_flight -= 1
            app.last_job_ended = time.monotonic()

    if settings.stream_mode:
        return _streaming(run_one)

    async def handler(job: dict[str, Any]) -> dict[str, Any]:
        return await run_one(job, None)

    return handler


def _streaming(run_one: Callable[[dict[str, Any], Chunk | None], Awaitable[dict[str, Any]]]) -> Handler:
    """Stream mode: every live event is a chunk (RunPod posts each to `/stream`), and the job's result, shaped
    as in the default mode, is the last one. A failed result (`{"error": ...}`) makes the SDK fail the job."""

    async def handler(job: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        chunks: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        task = asyncio.ensure_future(run_one(job, chunks.put_nowait))
        try:
            while True:
                waiting = asyncio.ensure_future(chunks.get())
                await asyncio.wait({waiting, task}, return_when=asyncio.FIRST_COMPLETED)
                if not waiting.done():
                    waiting.cancel()
                    break
                yield waiting.result()
            while not chunks.empty():
                yield chunks.get_nowait()
            result = task.result()
            result.pop("refresh_worker", None)  # already acted on (the SDK's config flag); not the caller's
            yield result
        finally:
            if not task.done():  # cancelled (RunPod's /cancel, a timeout) or closed early: stop the job too
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task

    return handler


def _local_cpu_fallback(settings: Settings) -> Settings:
    """Outside RunPod (`docker run IMAGE`, the local API server) a host without an NVIDIA GPU runs ComfyUI on
    the CPU rather than failing. In production a GPU worker without its GPU must fail: nothing is changed."""
    if not settings.manages_process or sdk.production_mode() or "--cpu" in settings.comfyui_extra_args:
        return settings
    if _host_gpu_count() > 0:
        return settings
    log.warning("no NVIDIA GPU visible: ComfyUI runs on the CPU (local mode only)")
    return settings.model_copy(update={"comfyui_extra_args": f"{settings.comfyui_extra_args} --cpu".strip()})


def _host_gpu_count() -> int:
    """GPUs the NVIDIA driver lists (nvidia-smi talks to the driver; no CUDA context in this process)."""
    tool = shutil.which("nvidia-smi")
    if tool is None:
        return 0
    try:
        listed = subprocess.run([tool, "-L"], capture_output=True, text=True, timeout=15, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    if listed.returncode != 0:
        return 0
    return sum(1 for line in listed.stdout.splitlines() if line.startswith("GPU "))


def _device_problem(settings: Settings, comfy: Comfy) -> str | None:
    """On a host with a GPU, ComfyUI must run on it: a CUDA build of torch that cannot see the GPU falls
    back to the CPU silently and would run every job hundreds of times slower."""
    if "--cpu" in shlex.split(settings.comfyui_extra_args):
        return None
    gpus = _host_gpu_count()
    if not gpus:
        return None
    try:
        stats = comfy.client.system_stats(timeout=10)
    except Exception as exc:  # noqa: BLE001 - any failure to answer is the reason
        return f"ComfyUI's /system_stats did not answer: {exc}"
    devices = [d for d in stats.get("devices") or [] if isinstance(d, dict)]
    types = sorted({str(d.get("type")) for d in devices})
    if "cuda" not in types:
        return (f"this host has {gpus} NVIDIA GPU(s) but ComfyUI runs on {', '.join(types) or 'no device'} "
                f"(torch {stats.get('system', {}).get('pytorch_version', '?')}); check the driver and the "
                "image's CUDA version (docs/image.md)")
    log.info("ComfyUI runs on %s", ", ".join(str(d.get("name")) for d in devices))
    return None


def _fetch_start_models(settings: Settings, deadline: float) -> float | None:
    """Fetch the models.yaml entries marked `start` (to the network volume when there is one). Seconds
    taken (0.0 when there is nothing to fetch), or None when the downloads outran the start budget. A failed
    download is logged, not fatal: jobs that need the file then fail with MISSING_MODELS naming it."""
    from .models.download import DownloadError, ensure_models, options_from_settings
    from .models.manifest import FetchWhen, load_manifest
    from .models.volume import model_download_root

    try:
        manifest = load_manifest(settings.models_manifest, missing_ok=True)
    except Exception as exc:  # a broken manifest must not keep the worker from serving other workflows
        log.error("models manifest %s unusable: %s", settings.models_manifest, exc)
        return 0.0
    entries = manifest.select(FetchWhen.START)
    if not entries:
        return 0.0
    started = time.monotonic()
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="start-models")
    future = pool.submit(ensure_models, entries, model_download_root(settings),
                         options=options_from_settings(settings))
    pool.shutdown(wait=False)
    try:
        future.result(timeout=max(0.0, deadline - time.monotonic()))
    except concurrent.futures.TimeoutError:
        return None
    except DownloadError as exc:
        log.error("start-time model download failed: %s", exc)
    return time.monotonic() - started


def _warm_up(settings: Settings, comfy: Comfy, seconds_left: float, deployments: Deployments) -> float | None:
    """Run the operator's warm-up workflow once, so the first real job finds its models loaded. Seconds
    taken, or None when it outran the start budget."""
    started = time.monotonic()
    assert settings.warmup_workflow is not None
    try:
        data = json.loads(settings.warmup_workflow.read_text())
    except (OSError, ValueError) as exc:
        log.error("warm-up workflow %s unreadable: %s", settings.warmup_workflow, exc)
        return 0.0
    job_input = data["input"] if isinstance(data, dict) and "input" in data else {"workflow": data}
    from .job import run_job

    job = run_job({"id": "warmup", "input": job_input}, comfy, settings, lambda p: None, deployments=deployments)
    try:
        result = asyncio.run(asyncio.wait_for(job, max(1.0, seconds_left)))
    except asyncio.TimeoutError:
        return None
    if "error" in result:
        log.error("warm-up workflow failed: %s", result["error"])
    return time.monotonic() - started


def _log_comfyui_tail(comfy: Comfy | None, lines: int = 30) -> None:
    tail = comfy.log_tail(lines) if comfy is not None else []
    if tail:
        log.error("ComfyUI's last %d log lines:\n%s", len(tail), "\n".join(tail))


def _flush_and_exit(code: int) -> None:
    """End the process now: a worker that cannot run jobs must not linger in RunPod's pool."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - a closed stream must not stop the exit
            pass
    os._exit(code)
