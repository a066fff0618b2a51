"""The error catalogue: stable codes, whether a retry can help, and the exception that carries them.

A failed job reaches the caller as RunPod status ``FAILED`` whose ``error`` field is a JSON *string*
(the runpod SDK sends the handler's ``error`` value as is, and its own exception reports are JSON strings
too, so callers parse one format). The object inside is :class:`ErrorPayload`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum
from typing import Any

from . import redaction


class ErrorCode(str, Enum):
    INVALID_INPUT = "INVALID_INPUT"
    INVALID_WORKFLOW = "INVALID_WORKFLOW"
    MISSING_MODELS = "MISSING_MODELS"
    MODEL_FETCH_FAILED = "MODEL_FETCH_FAILED"
    POLICY_VIOLATION = "POLICY_VIOLATION"
    INPUT_FETCH_FAILED = "INPUT_FETCH_FAILED"
    EXECUTION_ERROR = "EXECUTION_ERROR"
    OUT_OF_MEMORY = "OUT_OF_MEMORY"
    TIMEOUT = "TIMEOUT"
    CANCELLED = "CANCELLED"
    COMFYUI_UNAVAILABLE = "COMFYUI_UNAVAILABLE"
    UPLOAD_FAILED = "UPLOAD_FAILED"
    OUTPUT_TOO_LARGE = "OUTPUT_TOO_LARGE"
    OUTPUT_MISSING = "OUTPUT_MISSING"
    INTERNAL_ERROR = "INTERNAL_ERROR"


@dataclass(frozen=True)
class CodeInfo:
    retryable: bool
    meaning: str
    action: str


CATALOGUE: dict[ErrorCode, CodeInfo] = {
    ErrorCode.INVALID_INPUT: CodeInfo(
        False, "The job input does not match the input schema.",
        "Fix the fields listed in `details.errors` and send the job again."),
    ErrorCode.INVALID_WORKFLOW: CodeInfo(
        False, "ComfyUI (or the pre-flight check) refused the workflow graph.",
        "Fix the problems listed in `details.problems`; each names the node id, class type and input, and a "
        "`suggestion` when a known node type or value is close."),
    ErrorCode.MISSING_MODELS: CodeInfo(
        False, "The workflow names model files that this worker does not have.",
        "Add the files to the image or network volume, or pick one of `details.missing_models[].closest`."),
    ErrorCode.MODEL_FETCH_FAILED: CodeInfo(
        False, "A model file the request names by URL could not be fetched: a host the operator does not allow, a "
        "refused format (pickled), too large, a checksum mismatch, or an HTTP error; nothing of it was kept.",
        "Read `details.failures[]` (`field`, `reason`, `status`); `retryable` is true only when every failure "
        "was a passing one (a dropped connection, HTTP 5xx or 429)."),
    ErrorCode.POLICY_VIOLATION: CodeInfo(
        False, "The workflow breaks a rule the operator set (node types, sizes, paths).",
        "Change the workflow to stay within the rule named in `details`."),
    ErrorCode.INPUT_FETCH_FAILED: CodeInfo(
        True, "An input file could not be downloaded.",
        "Check that the URL named in `details` is public and reachable, then retry."),
    ErrorCode.EXECUTION_ERROR: CodeInfo(
        False, "A node raised an error while ComfyUI ran the workflow.",
        "Read `details.node_id`, `details.class_type` and `details.exception_message`; fix that node's inputs."),
    ErrorCode.OUT_OF_MEMORY: CodeInfo(
        True, "The GPU ran out of memory, also after the worker freed ComfyUI's memory and ran the prompt once "
        "more (`details.retried`).",
        "Lower the resolution, batch size or frame count, or use a GPU with more memory; a plain retry only helps "
        "when `retryable` is true (no retry was made)."),
    ErrorCode.TIMEOUT: CodeInfo(
        True, "The job ran longer than its timeout and was interrupted.",
        "Raise `execution_config.timeout` (up to the operator's ceiling) or make the workflow lighter."),
    ErrorCode.CANCELLED: CodeInfo(
        False, "The job was cancelled and ComfyUI was told to stop it.",
        "Nothing; submit again if the cancel was a mistake."),
    ErrorCode.COMFYUI_UNAVAILABLE: CodeInfo(
        True, "ComfyUI did not start, stopped answering or exited during the job.",
        "Retry; the worker restarts ComfyUI. ComfyUI's last log lines are in the worker's logs, under the job's id."),
    ErrorCode.UPLOAD_FAILED: CodeInfo(
        True, "Outputs could not be delivered to the chosen storage.",
        "Check the storage credentials and bucket; `details.failed` lists the outputs not delivered."),
    ErrorCode.OUTPUT_TOO_LARGE: CodeInfo(
        False, "The result is too large to return inline and no storage is configured.",
        "Configure S3 or Google Drive delivery (`output_config.storage`), or produce smaller outputs."),
    ErrorCode.OUTPUT_MISSING: CodeInfo(
        True, "ComfyUI reported an output file that the worker could not read.",
        "Retry; if it repeats, report it with `details` to the operator."),
    ErrorCode.INTERNAL_ERROR: CodeInfo(
        True, "An unexpected error inside the worker.",
        "Retry; if it repeats, report it with the job id to the operator."),
}


class WorkerError(Exception):
    """A failure with a stable code, a message a person can act on, and structured details."""

    def __init__(self, code: ErrorCode, message: str, details: dict[str, Any] | None = None,
                 *, refresh_worker: bool = False, retryable: bool | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details or {}
        self.refresh_worker = refresh_worker
        self._retryable = retryable

    @property
    def retryable(self) -> bool:
        """The code's usual answer, unless this failure knows better (a retry that was already made)."""
        return CATALOGUE[self.code].retryable if self._retryable is None else self._retryable

    def payload(self, job_id: str | None = None, timings: dict[str, float] | None = None,
                worker_version: str | None = None) -> dict[str, Any]:
        # Messages quote ComfyUI, storage and download errors: they leave scrubbed of secrets, paths and
        # other jobs' folders.
        payload: dict[str, Any] = {
            "code": self.code.value,
            "message": redaction.scrub_text(self.message, secrets := redaction.secret_values()),
            "retryable": self.retryable,
            "details": redaction.for_caller(self.details, secrets),
        }
        if job_id is not None:
            payload["job_id"] = job_id
        if timings is not None:
            payload["timings"] = timings
        if worker_version is not None:
            payload["worker_version"] = worker_version
        return payload

    def to_error_string(self, job_id: str | None = None, timings: dict[str, float] | None = None,
                        worker_version: str | None = None) -> str:
        return json.dumps(self.payload(job_id, timings, worker_version), ensure_ascii=False, default=str)

    def __repr__(self) -> str:
        return f"WorkerError({self.code.value}, {self.message!r})"


def invalid_input(field: str, problem: str, *, message: str | None = None, **details: Any) -> WorkerError:
    """INVALID_INPUT for one field: `details.errors` is always `[{"field", "problem"}]`, the shape every
    INVALID_INPUT has, and the message names the field."""
    return WorkerError(ErrorCode.INVALID_INPUT, message or f"{field}: {problem}",
                       {"errors": [{"field": field, "problem": problem}], **details})

