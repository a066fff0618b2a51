"""One request's workflow, resolved: converted, inputs applied, seeds randomised, checked.

These are the functions the job pipeline calls; each takes the live catalogue and model lists as plain
dicts and never talks to ComfyUI itself.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from ..errors import ErrorCode, WorkerError
from .convert import to_api_workflow
from .overrides import MediaSlot, apply_inputs, randomize_seeds, resolve_key
from .policy import Policy
from .preflight import PreflightReport, preflight


@dataclass
class ResolvedWorkflow:
    """An API graph ready to stage and submit, with what the core still has to do for it."""

    graph: dict[str, Any]
    media: list[MediaSlot] = field(default_factory=list)
    seeds: dict[str, int] = field(default_factory=dict)
    report: PreflightReport | None = None
    output_nodes: list[str] | None = None  # send as partial_execution_targets


def resolve_workflow(workflow: dict[str, Any], object_info: dict[str, Any], *,
                     inputs: dict[str, Any] | None = None, randomize: bool = False,
                     output_nodes: list[str] | None = None, models: dict[str, list[str]] | None = None,
                     policy: Policy | None = None, input_files: list[str] | None = None,
                     staged_files: list[str] | None = None, rng: random.Random | None = None,
                     check: bool = True) -> ResolvedWorkflow:
    """Convert (UI format), apply ``inputs``, randomise seeds, then pre-flight; raises the report's error.

    Inputs holding media are validated after staging: their values are placeholders until then, so the
    pre-flight treats them as staged files.
    """
    graph = to_api_workflow(workflow, object_info, rng=rng)
    graph, media = apply_inputs(graph, inputs, object_info)
    seeds: dict[str, int] = {}
    if randomize:
        explicit = {resolve_key(graph, key) for key in (inputs or {})}
        seeds = randomize_seeds(graph, object_info, rng, keep=explicit)
    staged = list(staged_files or []) + [s.value for s in media]
    report = preflight(graph, object_info, models, policy, output_nodes=output_nodes,
                       input_files=input_files, staged_files=staged if (input_files is not None or staged_files)
                       else None)
    if check:
        report.raise_for_errors()
    return ResolvedWorkflow(graph, media, seeds, report, output_nodes)


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
        raise WorkerError(ErrorCode.INVALID_INPUT, "inputs: a batch must be a non-empty list of objects",
                          {"errors": [{"field": "inputs", "problem": "empty batch"}]})
    results: list[ResolvedWorkflow] = []
    failures: list[dict[str, Any]] = []
    codes: set[ErrorCode] = set()
    for index, item in enumerate(inputs_list):
        try:
            results.append(resolve_workflow(workflow, object_info, inputs=item, **kwargs))
        except WorkerError as exc:
            codes.add(exc.code)
            failures.append({"index": index, "code": exc.code.value, "message": exc.message,
                             "details": exc.details})
    if failures:
        code = codes.pop() if len(codes) == 1 else ErrorCode.INVALID_WORKFLOW
        summary = "; ".join(f"[{f['index']}] {f['message']}" for f in failures[:5])
        raise WorkerError(code, f"{len(failures)} of {len(inputs_list)} input sets are invalid: {summary}",
                          {"items": failures})
    return results
