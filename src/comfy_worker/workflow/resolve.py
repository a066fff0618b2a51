"""One request's workflow, resolved: converted, inputs applied, seeds randomised, checked.

These are the functions the job pipeline calls; each takes the live catalogue and model lists as plain
dicts and never talks to ComfyUI itself.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..errors import ErrorCode, WorkerError, invalid_input
from .convert import to_api_workflow
from .overrides import MediaSlot, apply_inputs, randomize_seeds, resolve_key
from .policy import Policy
from .preflight import PreflightReport, preflight

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class ResolvedWorkflow:
    """An API graph ready to stage and submit, with what the core still has to do for it."""

    graph: dict[str, Any]
    media: list[MediaSlot] = field(default_factory=list)
    seeds: dict[str, int] = field(default_factory=dict)
    report: PreflightReport | None = None
    output_nodes: list[str] | None = None  # send as partial_execution_targets
    models: list[dict[str, Any]] = field(default_factory=list)  # a dry run's model files named by URL


def build_workflow(workflow: dict[str, Any], object_info: dict[str, Any], *,
                   inputs: dict[str, Any] | None = None, randomize: bool = False,
                   output_nodes: list[str] | None = None, rng: random.Random | None = None) -> ResolvedWorkflow:
    """Convert (UI format) and apply ``inputs`` and seeds; nothing is checked yet. The caller's workflow is
    never changed."""
    graph = to_api_workflow(workflow, object_info, rng=rng)
    graph, media = apply_inputs(graph, inputs, object_info)
    seeds: dict[str, int] = {}
    if randomize:
        explicit = {resolve_key(graph, key) for key in (inputs or {})}
        seeds = randomize_seeds(graph, object_info, rng, keep=explicit)
    return ResolvedWorkflow(graph, media, seeds, None, output_nodes)


def check_workflow(resolved: ResolvedWorkflow, object_info: dict[str, Any], *,
                   models: dict[str, list[str]] | None = None, policy: Policy | None = None,
                   input_files: list[str] | None = None, staged_files: list[str] | None = None) -> PreflightReport:
    """Pre-flight the graph as it will be submitted; the report is kept on `resolved` and returned.

    Media inputs still holding their request values are treated as files the job will stage."""
    staged = list(staged_files or []) + [s.value for s in resolved.media]
    resolved.report = preflight(resolved.graph, object_info, models, policy, output_nodes=resolved.output_nodes,
                                input_files=input_files,
                                staged_files=staged if (input_files is not None or staged_files) else None)
    return resolved.report


def resolve_workflow(workflow: dict[str, Any], object_info: dict[str, Any], *,
                     inputs: dict[str, Any] | None = None, randomize: bool = False,
                     output_nodes: list[str] | None = None, models: dict[str, list[str]] | None = None,
                     policy: Policy | None = None, input_files: list[str] | None = None,
                     staged_files: list[str] | None = None, rng: random.Random | None = None,
                     check: bool = True) -> ResolvedWorkflow:
    """Build, then pre-flight; raises the report's error unless ``check`` is off (a dry run's answer)."""
    resolved = build_workflow(workflow, object_info, inputs=inputs, randomize=randomize,
                              output_nodes=output_nodes, rng=rng)
    report = check_workflow(resolved, object_info, models=models, policy=policy, input_files=input_files,
                            staged_files=staged_files)
    if check:
        report.raise_for_errors()
    return resolved


def dry_run(workflow: dict[str, Any], object_info: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """For ``execution_config.dry_run``: the resolved API graph and the full report; never raises for
    validation problems (they are the answer), only for input the worker cannot read at all."""
    resolved = resolve_workflow(workflow, object_info, check=False, **kwargs)
    assert resolved.report is not None
    return {"workflow": resolved.graph, "preflight": resolved.report.to_dict(),
            "media_inputs": [{"node_id": m.node_id, "input_name": m.input_name, "key": m.key}
                             for m in resolved.media],
            "seeds": resolved.seeds}


def expand_batch(workflow: dict[str, Any], inputs_list: list[dict[str, Any]], object_info: dict[str, Any],
                 **kwargs: Any) -> list[ResolvedWorkflow]:
    """One resolved graph per input set; all are validated before any is returned, and one error names
    every failing set (``details.items[i]``)."""
    if not isinstance(inputs_list, list) or not inputs_list:
        raise invalid_input("inputs", "empty batch", message="inputs: a batch must be a non-empty list of objects")
    return for_each_item(inputs_list, lambda item: resolve_workflow(workflow, object_info, inputs=item, **kwargs))


def for_each_item(items: list[T], step: Callable[[T], R]) -> list[R]:
    """`step` for every item of a batch, so that one error names every failing item (``details.items``)
    instead of stopping at the first; a single item's error passes through as it is."""
    results: list[R] = []
    failures: list[dict[str, Any]] = []
    errors: list[WorkerError] = []
    for index, item in enumerate(items):
        try:
            results.append(step(item))
        except WorkerError as exc:
            errors.append(exc)
            failures.append({"index": index, "code": exc.code.value, "message": exc.message,
                             "details": exc.details})
    if not failures:
        return results
    if len(items) == 1:
        raise errors[0]
    codes = {e.code for e in errors}
    code = codes.pop() if len(codes) == 1 else ErrorCode.INVALID_WORKFLOW
    summary = "; ".join(f"[{f['index']}] {f['message']}" for f in failures[:5])
    # The items' problems (and field errors) also side by side, each naming its item: the same shape as
    # the error of a single job.
    details: dict[str, Any] = {"items": failures}
    for key in ("problems", "errors"):
        found = [{**entry, "item": f["index"]} for f in failures for entry in f["details"].get(key, [])]
        if found or (key == "problems" and code is ErrorCode.INVALID_WORKFLOW):
            details[key] = found
    raise WorkerError(code, f"{len(failures)} of {len(items)} input sets are invalid: {summary}", details)
