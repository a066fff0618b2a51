"""Logging set-up for the worker process: one format, level from settings, and no payload in any line."""

from __future__ import annotations

import logging
import re
import sys
from contextvars import ContextVar

# The job a piece of work belongs to: set once per job; threads started with asyncio.to_thread (and pools
# that copy the context) inherit it, so every line logged for a job names it.
current_job: ContextVar[str | None] = ContextVar("current_job", default=None)

# A run of base64 (or hex) longer than any id, key or hash the logs need to carry.
_BASE64_RUN = re.compile(r"(?:data:[\w.+-]+/[\w.+-]+;base64,)?[A-Za-z0-9+/_-]{200,}={0,2}")
# SDK messages whose payload is a whole job, result or stream chunk: only their size is logged.
_PAYLOAD_PREFIXES = ("Handler output:", "run_job return:", "Job result:", "Retrieved local job:",
                     "Stream output:", "Generator output:", "Async Generator output:")
_MAX_MESSAGE = 8000


def redact(message: str) -> str:
    """A log message without outputs, inputs or anything base64: payload lines keep only their size."""
    for prefix in _PAYLOAD_PREFIXES:
        index = message.find(prefix)
        if index != -1:
            size = len(message) - index - len(prefix)
            return f"{message[:index + len(prefix)]} <{size} characters, not logged>"
    message = _BASE64_RUN.sub(lambda m: f"<{len(m.group(0))} characters of encoded data>", message)
    if len(message) > _MAX_MESSAGE:
        message = f"{message[:_MAX_MESSAGE]} <{len(message) - _MAX_MESSAGE} more characters>"
    return message


class RedactingFilter(logging.Filter):
    """The same rule for the worker's own log records (a stray payload must never reach RunPod's logs)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


class JobIdFilter(logging.Filter):
    """Adds `job=<id> ` to each record logged while a job runs (and nothing otherwise)."""

    def filter(self, record: logging.LogRecord) -> bool:
        job = current_job.get()
        record.job = f"job={job} " if job else ""
        return True


def configure_logging(level: str = "INFO") -> None:
    root = logging.getLogger()
    if any(getattr(h, "_comfy_worker", False) for h in root.handlers):
        root.setLevel(level)
        return
    # One format for everything: drop handlers other libraries installed on the root logger at import.
    for existing in list(root.handlers):
        root.removeHandler(existing)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(job)s%(message)s"))
    handler.addFilter(JobIdFilter())
    # Outputs and inputs never reach the log, whoever logs them (RunPod keeps every line of it).
    handler.addFilter(RedactingFilter())
    handler._comfy_worker = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    # Library chatter that would drown the job log.
    for name in ("urllib3", "websocket", "botocore", "boto3", "s3transfer", "googleapiclient"):
        logging.getLogger(name).setLevel(logging.WARNING)
