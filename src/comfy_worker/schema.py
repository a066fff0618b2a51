"""The job contract: what a caller sends (``JobInput``) and what comes back (``JobResult``, ``ErrorPayload``).

These models are the single source of the JSON Schemas in ``docs/schema/``.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import ErrorCode, WorkerError

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\- ()\[\]+=,@]{0,199}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InputImage(_Strict):
    """An input image, in the form the most-used ComfyUI worker accepts."""

    name: str = Field(description="File name the workflow refers to (for example in LoadImage's `image`).",
                      examples=["input.png"])
    image: str = Field(description="The image as base64, or as a data URI (`data:image/png;base64,...`).",
                       min_length=1)

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        if "/" in value or "\\" in value or value in {".", ".."} or not _SAFE_NAME.match(value):
            raise ValueError("must be a plain file name (letters, digits, '.', '_', '-', spaces; no folders)")
        return value


class StorageConfig(_Strict):
    """Where outputs go. `inline` returns them base64-encoded inside the result."""

    provider: Literal["inline"] = Field("inline", description="Delivery target.")


class OutputConfig(_Strict):
    include_temp: bool | None = Field(
        None, description="Also return temporary outputs (PreviewImage). Default: the operator's setting "
                          "(`INCLUDE_TEMP_OUTPUTS`, off unless set).")
    storage: StorageConfig = Field(default_factory=StorageConfig)


class ExecutionConfig(_Strict):
    randomize_seeds: bool = Field(False, description="Give every seed input (seed, noise_seed, or flagged "
                                  "control_after_generate) a fresh random value within its range. Seeds set in "
                                  "`inputs` are kept.")
    output_nodes: list[str] | None = Field(None, description="Run only these output nodes (and what they need); "
                                           "each must exist and be an output node.", min_length=1)
    dry_run: bool = Field(False, description="Convert, apply `inputs` and run the pre-flight check only; return "
                          "the resolved API graph and the report without running anything.")


class JobInput(_Strict):
    """`job["input"]` of a RunPod job sent to this worker."""

    workflow: dict[str, Any] = Field(description="The workflow in ComfyUI's API format (node id -> node).")
    images: list[InputImage] = Field(default_factory=list,
                                     description="Input images, uploaded to ComfyUI before the run.")
    inputs: dict[str, Any] | list[dict[str, Any]] | None = Field(
        None, description="Node input values keyed `\"<node id>.<input>\"` or `\"<node title>.<input>\"`; a list "
                          "of such objects queues one run per set (a batch). See docs/workflows.md.")
    output_config: OutputConfig = Field(default_factory=OutputConfig)
    execution_config: ExecutionConfig = Field(default_factory=ExecutionConfig)

    @field_validator("workflow")
    @classmethod
    def _non_empty(cls, value: dict[str, Any]) -> dict[str, Any]:
        if not value:
            raise ValueError("must contain at least one node")
        return value


# ------------------------------------------------------------------------------------------------
# Results

OutputKind = Literal["image", "animation", "video", "audio", "3d", "latent", "text", "file"]


class OutputEntry(BaseModel):
    """One produced file or text."""

    node_id: str = Field(description="Id of the node that produced it.")
    kind: OutputKind
    key: str = Field(description="The key of ComfyUI's UI output dict it came from (`images`, `gifs`, ...).")
    filename: str | None = Field(None, description="File name as ComfyUI wrote it (files only).")
    type: Literal["output", "temp", "input"] | None = Field(None, description="ComfyUI folder of the file.")
    mime_type: str
    size: int = Field(description="Size in bytes (UTF-8 bytes for text).")
    sha256: str | None = None
    width: int | None = None
    height: int | None = None
    data: str | None = Field(None, description="Base64 of the file, when delivered inline.")
    text: str | None = Field(None, description="The text, for `kind: text`.")
    url: str | None = Field(None, description="Where to download it, when delivered to storage.")


class CompatImage(BaseModel):
    """The `images` list of the most-used ComfyUI worker, kept so its callers can switch unchanged."""

    filename: str
    type: Literal["base64", "s3_url"]
    data: str


class JobResult(BaseModel):
    """`output` of a COMPLETED job."""

    prompt_id: str
    outputs: list[OutputEntry]
    images: list[CompatImage]
    timings: dict[str, float] = Field(description="Seconds spent in each stage.")
    warnings: list[str] = Field(default_factory=list)
    seeds: dict[str, int] | None = Field(None, description="Seed values the worker chose (`\"<node id>.<input>\"` "
                                         "-> value), when `execution_config.randomize_seeds` is set.")


class DryRunResult(BaseModel):
    """`output` of a COMPLETED job sent with `execution_config.dry_run`: nothing ran."""

    dry_run: Literal[True]
    workflow: dict[str, Any] = Field(description="The API-format graph ComfyUI would be given.")
    preflight: dict[str, Any] = Field(description="The pre-flight report (`ok`, `problems`, `node_errors`, ...).")
    media_inputs: list[dict[str, str]] = Field(description="`inputs` values that would be uploaded as files "
                                               "(`node_id`, `input_name`, `key`).")
    seeds: dict[str, int] = Field(description="Seed values chosen by `randomize_seeds`.")
    warnings: list[str]
    timings: dict[str, float]


class ProgressPayload(BaseModel):
    """`output` of `GET /status` while a job is IN_PROGRESS (sent with runpod's progress_update)."""

    stage: Literal["queued", "running"] = Field(description="`running` once ComfyUI started the prompt.")
    prompt_id: str
    node: str | None = Field(description="Id of the node running now.")
    class_type: str | None = Field(description="Its node type.")
    step: float | None = Field(description="Step of the running node (samplers), if it reports steps.")
    max_steps: float | None
    nodes_done: int = Field(description="Nodes finished, not counting nodes served from ComfyUI's cache.")
    nodes_total: int = Field(description="Nodes that have to run (cached nodes excluded).")
    percent: float = Field(ge=0, le=100, description="Overall progress; never goes down.")


class ErrorPayload(BaseModel):
    """The object inside the JSON string of a FAILED job's `error` field."""

    code: ErrorCode
    message: str
    retryable: bool
    details: dict[str, Any]
    job_id: str | None = None


# ------------------------------------------------------------------------------------------------


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "input"


def parse_job_input(raw: Any) -> JobInput:
    """Validate ``job["input"]``; every problem is reported with the field it belongs to."""
    if not isinstance(raw, dict):
        raise WorkerError(ErrorCode.INVALID_INPUT, "job input must be a JSON object",
                          {"errors": [{"field": "input", "problem": f"got {type(raw).__name__}"}]})
    try:
        return JobInput.model_validate(raw)
    except ValidationError as exc:
        errors = []
        for err in exc.errors(include_url=False):
            problem = err["msg"]
            if err["type"] == "extra_forbidden":
                problem = "unknown field"
            elif err["type"] == "missing":
                problem = "required field is missing"
            errors.append({"field": _loc(tuple(err["loc"])), "problem": problem})
        summary = "; ".join(f"{e['field']}: {e['problem']}" for e in errors[:5])
        if len(errors) > 5:
            summary += f"; and {len(errors) - 5} more"
        raise WorkerError(ErrorCode.INVALID_INPUT, f"invalid job input: {summary}", {"errors": errors}) from None
