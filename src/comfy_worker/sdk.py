"""What the worker asks of the runpod SDK (runpod 1.12.0) beyond `runpod.serverless.start`.

- The SDK's automatic start-up checks are turned off: on a host where `nvidia-smi` works they import torch
  in the worker process and run a matmul on cuda:0 (a CUDA context of the worker's own, VRAM taken from
  ComfyUI, and a 2 s limit a slow GPU start can miss), they fail the worker below 10 % free disk (after
  start-up model downloads that is normal), and they need a route to 8.8.8.8. The worker's own check
  (`comfyui_fitness`) replaces them: ComfyUI ready, on the device this host has.
- The SDK's logger prints every handler result whole at DEBUG (its default) and the single-job result at
  INFO: base64 outputs and inputs, presigned URLs. Its messages pass through `redact` first.
- The SDK asks py-cpuinfo for the processor's name as it is imported, and py-cpuinfo starts a Python process
  of its own to find it: over a second of CPU at every worker start. `import_sdk` answers from /proc/cpuinfo.
- Progress goes through `ProgressPoster`, which posts in order and is closed before the result is
  returned, so no progress post can arrive after the result (the SDK's `progress_update` posts from a
  thread of its own per call, unordered).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import platform
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .logs import redact

log = logging.getLogger("comfy_worker.sdk")

SDK_CHECK_SWITCHES = ("RUNPOD_SKIP_AUTO_SYSTEM_CHECKS", "RUNPOD_SKIP_GPU_CHECK")

def import_sdk() -> None:
    """Import the runpod SDK without the subprocess its debugger module starts to read the CPU's name.

    runpod.serverless.utils.rp_debugger calls `cpuinfo.get_cpu_info()` at import, which runs py-cpuinfo in a
    new Python process (about 1.2 s); the name only appears in the SDK's debugger output. On Linux the name it
    finds is /proc/cpuinfo's "model name", read here instead, for the length of the import only."""
    if "runpod" in sys.modules:
        return
    try:
        import cpuinfo
    except ImportError:  # an SDK without the debugger's dependency probes nothing
        import runpod
        return
    probe = cpuinfo.get_cpu_info
    cpuinfo.get_cpu_info = lambda: {"brand_raw": processor_name()}
    try:
        import runpod  # noqa: F401
    finally:
        cpuinfo.get_cpu_info = probe


def processor_name() -> str:
    """The CPU's name as py-cpuinfo reports it on Linux (`brand_raw`), without a Python process of its own."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    return platform.processor() or platform.machine() or "unknown"


def production_mode() -> bool:
    """Whether the SDK will run its job loop against RunPod (it decides by this variable alone)."""
    return bool(os.environ.get("RUNPOD_WEBHOOK_GET_JOB"))


def disable_sdk_checks() -> None:
    """Turn the SDK's automatic fitness checks off for this process (they are read when they run)."""
    for name in SDK_CHECK_SWITCHES:
        if os.environ.get(name, "").lower() != "true":
            os.environ[name] = "true"


def redact_sdk_logs(level: str | None = None) -> None:
    """Route every message of the SDK's logger through `redact`, and set its level (INFO unless the operator
    chose one with RUNPOD_LOG_LEVEL: the SDK's own default, DEBUG, logs every result)."""
    from runpod.serverless.modules.rp_logger import RunPodLogger

    original = RunPodLogger.log
    if not getattr(original, "_redacting", False):
        def log_redacted(self: RunPodLogger, message: Any, message_level: str = "INFO",
                         job_id: str | None = None) -> None:
            original(self, redact(str(message)), message_level, job_id)

        log_redacted._redacting = True  # type: ignore[attr-defined]
        RunPodLogger.log = log_redacted  # type: ignore[method-assign]
    from runpod.serverless.modules.rp_logger import _validate_log_level

    chosen = level or os.environ.get("RUNPOD_LOG_LEVEL") or os.environ.get("RUNPOD_DEBUG_LEVEL") or "INFO"
    # Set directly: set_level() prints a line of its own to stdout, where single-job mode's output goes.
    RunPodLogger().level = _validate_log_level(chosen.upper())


def register_fitness(check: Callable[[], None]) -> None:
    """Register the worker's start-up check with the SDK: in production a failure is reported to RunPod and
    ends the process (exit code 1) before any job is taken. The SDK runs no check in its local modes."""
    from runpod.serverless import register_fitness_check

    register_fitness_check(check)


Poster = Callable[[dict[str, Any]], Any]


class ProgressPoster:
    """A job's progress, posted to RunPod's job-done URL as the SDK's `progress_update` does, but in order:
    one post at a time, the latest payload replacing any not yet sent, and `aclose()` waits for the post in
    flight (bounded) and drops the rest, so no progress post can arrive after the job's result.

    `post` is a coroutine function taking the payload; the default is the SDK's own `send_result` with
    `{"status": "IN_PROGRESS", "output": payload}` on a session of the poster's own."""

    def __init__(self, job: dict[str, Any], post: Callable[[dict[str, Any]], Any] | None = None, *,
                 close_timeout: float = 15.0) -> None:
        self.job = job
        self._post = post
        self._session: Any = None
        self._pending: dict[str, Any] | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.close_timeout = close_timeout
        self.sent = 0

    def send(self, payload: dict[str, Any]) -> None:
        """Queue a payload (never blocks; called on the job's event loop)."""
        if self._closed:
            return
        self._pending = payload
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._pump())

    async def _pump(self) -> None:
        while self._pending is not None and not self._closed:
            payload, self._pending = self._pending, None
            try:
                await self._send_one(payload)
                self.sent += 1
            except Exception as exc:  # progress must never fail a job
                log.warning("progress post failed: %s", exc)

    async def _send_one(self, payload: dict[str, Any]) -> None:
        if self._post is not None:
            await self._post(payload)
            return
        import aiohttp
        from runpod.http_client import get_auth_header
        from runpod.serverless.modules.rp_http import send_result

        if self._session is None:
            # Bounded, unlike the SDK's own session (600 s): a progress post must never hold a job's result.
            self._session = aiohttp.ClientSession(headers=get_auth_header(),
                                                  timeout=aiohttp.ClientTimeout(total=5))
        await send_result(self._session, {"status": "IN_PROGRESS", "output": payload}, self.job)

    async def aclose(self) -> None:
        """Stop taking payloads, wait for the post in flight, then release the session."""
        self._closed = True
        self._pending = None
        task = self._task
        if task is not None and not task.done():
            try:
                await asyncio.wait_for(asyncio.shield(task), self.close_timeout)
            except asyncio.TimeoutError:
                log.error("a progress post took over %.0f s; it is abandoned before the result",
                          self.close_timeout)
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        if self._session is not None:
            with contextlib.suppress(Exception):
                await self._session.close()
            self._session = None


def progress_sender(job: dict[str, Any]) -> tuple[Callable[[dict[str, Any]], None], ProgressPoster | None]:
    """Where a job's progress goes: RunPod's job-done URL in production, the log otherwise."""
    if not os.environ.get("RUNPOD_WEBHOOK_POST_OUTPUT"):
        return (lambda payload: log.debug("progress %s", json.dumps(payload))), None
    poster = ProgressPoster(job)
    return poster.send, poster


# The settings a person starting the worker by hand is most likely to need; README.md lists every one.
_MAIN_SETTINGS = ("COMFYUI_DIR", "COMFYUI_PYTHON", "COMFYUI_URL", "COMFYUI_EXTRA_ARGS", "LOG_LEVEL",
                  "MAX_CONCURRENCY", "JOB_TIMEOUT", "DELIVERY_PROVIDER", "INLINE_MAX_BYTES", "BUCKET_ENDPOINT_URL",
                  "BUCKET_NAME", "COMFY_ORG_API_KEY", "DEPLOYED_WORKFLOWS_DIR", "DEPLOYED_WORKFLOWS_ONLY")


def usage() -> str:
    """`handler.py --help`: the SDK's own flags and the worker's main settings; nothing is started."""
    import textwrap

    import_sdk()
    import runpod.serverless

    from .settings import Settings

    sdk_help = runpod.serverless.parser.format_help()
    flags = sdk_help[sdk_help.find("options:"):].split("\n", 1)[1]  # its usage line would name the SDK's module
    fields = {env: name for name, env in Settings.env_names().items()}
    about = ("Runs the ComfyUI worker under the runpod SDK. Without flags it runs ./test_input.json once and "
             "exits; with --rp_serve_api it serves /runsync, /run and /status on http://localhost:8000. ComfyUI "
             "is started from COMFYUI_DIR; ./scripts/serve.sh starts the ComfyUI emulator instead when "
             "COMFYUI_DIR is unset.")
    lines = ["usage: python handler.py [--rp_serve_api] [--rp_api_host HOST] [--rp_api_port PORT] [...]", "",
             *textwrap.wrap(about, 100), "", "The runpod SDK's flags:", flags.rstrip(), "",
             "Main settings (environment variables; README.md lists all of them):"]
    for env in _MAIN_SETTINGS:
        field = Settings.model_fields[fields[env]]
        lines.append(f"  {env}")
        lines.extend(textwrap.wrap(str(field.description), 100, initial_indent="      ",
                                   subsequent_indent="      "))
    return "\n".join(lines) + "\n"
