"""Submit one job, follow it to a final status, and turn Ctrl-C into a cancel."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from .backends import FINAL, Backend, BackendError
from .outcome import Outcome, parse_error
from .spec import JobSpec

log = logging.getLogger("comfy_run")

OnStatus = Callable[[str, Any], None]


def run_workflow(backend: Backend, spec: JobSpec, *, request: dict[str, Any] | None = None,
                 on_status: OnStatus | None = None, on_submitted: Callable[[str], None] | None = None,
                 poll_interval: float = 1.0, sleep: Callable[[float], None] = time.sleep) -> Outcome:
    """Run `spec` on `backend` until it is final. `request` adds RunPod fields (`webhook`, `policy`, `s3Config`).

    Ctrl-C (KeyboardInterrupt) while the job runs asks the backend to cancel it and returns a CANCELLED outcome.
    """
    body = {**(request or {}), "input": spec.job_input()}
    job_id = backend.submit(body)
    if on_submitted:
        on_submitted(job_id)
    try:
        while True:
            answer = backend.status(job_id)
            status = str(answer.get("status", "UNKNOWN"))
            if on_status:
                on_status(status, answer.get("output"))
            if status in FINAL:
                error = parse_error(answer["error"]) if status == "FAILED" else None
                return Outcome(job_id, status, answer.get("output") if status == "COMPLETED" else None, error)
            sleep(poll_interval)
    except KeyboardInterrupt:
        return cancelled(backend, job_id)


def cancelled(backend: Backend, job_id: str) -> Outcome:
    """Ctrl-C while a job runs: ask the endpoint to cancel it, and say so."""
    log.warning("cancelling job %s", job_id)
    try:
        backend.cancel(job_id)
    except BackendError as exc:
        log.error("the cancel request failed: %s", exc)
    return Outcome(job_id, "CANCELLED")
