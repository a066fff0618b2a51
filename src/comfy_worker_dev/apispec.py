"""The endpoint API as callers see it: RunPod's request and status envelopes around our job contract, and the
JSON Schemas of both, generated from the pydantic models into ``docs/schema/``.

`python -m comfy_worker_dev.apispec --write` rewrites the schema files; without `--write` it reports stale files
and exits 1 (a test does the same). `python -m comfy_worker_dev.reference --write` calls it too.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from comfy_worker.deployments import WorkflowCatalogue
from comfy_worker.live_events import EventBody, StreamChunk
from comfy_worker.schema import (ERROR_DETAILS, DryRunResult, ErrorPayload, JobInput, JobResult, ModelFetchProgress,
                                  Progress, ProgressPayload, S3Config)

from .repo import repo_root

log = logging.getLogger("comfy_worker_dev.apispec")

ROOT = repo_root()
SCHEMA_DIR = ROOT / "docs" / "schema"

JobStatus = Literal["IN_QUEUE", "IN_PROGRESS", "COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"]
FINAL_STATUSES: frozenset[str] = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"})


class Policy(BaseModel):
    """RunPod's per-request `policy`."""

    model_config = ConfigDict(extra="forbid")

    executionTimeout: int | None = Field(None, ge=5_000, le=604_800_000,
                                         description="Milliseconds the job may run (default: the endpoint's "
                                                     "execution timeout, 600000).")
    ttl: int | None = Field(None, ge=10_000, le=604_800_000,
                            description="Milliseconds the job lives from submission, queue time included "
                                        "(default 86400000); afterwards /status answers 404.")
    lowPriority: bool | None = Field(None, description="The job does not make the endpoint scale up.")


class EndpointRequest(BaseModel):
    """Body of `POST /v2/{endpoint_id}/run` and `/runsync`."""

    model_config = ConfigDict(extra="forbid")

    input: JobInput = Field(description="Becomes `job[\"input\"]` for the worker.")
    webhook: str | None = Field(None, description="URL RunPod POSTs the final status response to.")
    policy: Policy | None = None
    s3Config: S3Config | None = None


class StatusResponse(BaseModel):
    """What `/runsync`, `/status/{id}`, `/cancel/{id}` and `/retry/{id}` answer.

    `output` is a `JobResult`, `DryRunResult` or `WorkflowCatalogue` when COMPLETED and a `ProgressPayload` (or,
    while the job fetches the model files it names by URL, a `ModelFetchProgress`) while IN_PROGRESS;
    `error` is a string holding a JSON `ErrorPayload` when FAILED. An endpoint in stream mode (STREAM_MODE)
    answers a COMPLETED job with the list of its stream chunks, the result last.
    """

    id: str
    status: JobStatus
    delayTime: int | None = Field(None, description="Milliseconds the job waited in the queue.")
    executionTime: int | None = Field(None, description="Milliseconds the job ran.")
    workerId: str | None = None
    output: (JobResult | DryRunResult | WorkflowCatalogue | ProgressPayload | ModelFetchProgress | list[StreamChunk]
             | None) = None
    error: str | None = Field(None, description="JSON text of an `ErrorPayload` (parse it with json.loads).")


SCHEMAS: dict[str, type[BaseModel]] = {
    "job-input": JobInput,
    "job-result": JobResult,
    "dry-run-result": DryRunResult,
    "workflow-catalogue": WorkflowCatalogue,
    "error-payload": ErrorPayload,
    "progress": Progress,
    "endpoint-request": EndpointRequest,
    "status-response": StatusResponse,
    "stream-chunk": StreamChunk,
    "event": EventBody,
}


def schema_of(name: str) -> dict[str, Any]:
    model = SCHEMAS[name]
    # Requests are validated as sent; results as produced.
    mode: Literal["validation", "serialization"] = "validation" if name in {"job-input", "endpoint-request"} \
        else "serialization"
    schema = model.model_json_schema(mode=mode)
    if name == "error-payload":
        add_details_by_code(schema)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"{name}.schema.json", **schema}


def add_details_by_code(schema: dict[str, Any]) -> None:
    """Each code's `details` shape (schema.ERROR_DETAILS) as `if code is X then details is Y` rules."""
    defs = schema.setdefault("$defs", {})
    rules = []
    for code, model in ERROR_DETAILS.items():
        sub = model.model_json_schema(mode="serialization", ref_template="#/$defs/{model}")
        defs.update(sub.pop("$defs", {}))
        defs[model.__name__] = sub
        rules.append({"if": {"properties": {"code": {"const": code.value}}},
                      "then": {"properties": {"details": {"$ref": f"#/$defs/{model.__name__}"}}}})
    schema["allOf"] = rules


def schema_path(name: str) -> Path:
    return SCHEMA_DIR / f"{name}.schema.json"


def render_schema(name: str) -> str:
    return json.dumps(schema_of(name), indent=2, ensure_ascii=False, sort_keys=False) + "\n"


def stale_schemas() -> list[Path]:
    stale = []
    for name in SCHEMAS:
        path = schema_path(name)
        if not path.exists() or path.read_text() != render_schema(name):
            stale.append(path)
    return stale


def write_schemas() -> list[Path]:
    SCHEMA_DIR.mkdir(parents=True, exist_ok=True)
    changed = stale_schemas()
    for path in changed:
        path.write_text(render_schema(path.name.removesuffix(".schema.json")))
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", action="store_true", help="rewrite docs/schema/*.schema.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    paths = write_schemas() if args.write else stale_schemas()
    for path in paths:
        log.info("%s: %s", "updated" if args.write else "stale", path.relative_to(ROOT))
    return 1 if paths and not args.write else 0


if __name__ == "__main__":
    sys.exit(main())
