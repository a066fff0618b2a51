"""The one shape of a workflow problem, as INVALID_WORKFLOW, MISSING_MODELS and POLICY_VIOLATION report it in
`details.problems`, whether the worker's pre-flight found it or ComfyUI refused the prompt."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

from .errors import ErrorCode, WorkerError


def closest(name: str, known: Iterable[str]) -> str | None:
    """The known name `name` was most likely meant to be (a typo, a wrong case), or None when none is close."""
    names = [k for k in known if isinstance(k, str)]
    by_case = {k.lower(): k for k in names}
    if name.lower() in by_case:
        return by_case[name.lower()]
    found = difflib.get_close_matches(name, names, n=1, cutoff=0.8)
    return found[0] if found else None


def problem(node_id: str | None, class_type: str | None, kind: str | None, input_name: str | None,
            message: str | None, details: Any, suggestion: str | None = None) -> dict[str, Any]:
    """One problem: the node (id and class type) and input it concerns, its kind, and what is wrong; with a
    `suggestion` (the node type or input probably meant) when there is one."""
    found = {"node_id": node_id, "class_type": class_type, "type": kind, "input_name": input_name,
             "message": message, "details": details}
    if suggestion is not None:
        found["suggestion"] = suggestion
    return found


def flatten_node_errors(node_errors: dict[str, Any], workflow: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """ComfyUI's node_errors shape as a flat list of problems, each naming node, class type and input."""
    flat = []
    for node_id, entry in node_errors.items():
        class_type = entry.get("class_type")
        if class_type is None and workflow and isinstance(workflow.get(node_id), dict):
            class_type = workflow[node_id].get("class_type")
        for err in entry.get("errors", []):
            extra = err.get("extra_info") or {}
            flat.append(problem(node_id, class_type, err.get("type"), extra.get("input_name"),
                                err.get("message"), err.get("details")))
    return flat


def invalid_workflow(message: str, problems: list[dict[str, Any]], *, source: str = "conversion",
                     **details: Any) -> WorkerError:
    """INVALID_WORKFLOW in the one shape every path gives it: `source`, `problems` (each in `problem`'s
    shape) and ComfyUI's `node_errors` (empty when ComfyUI was not asked)."""
    return WorkerError(ErrorCode.INVALID_WORKFLOW, message,
                       {"node_errors": {}, **details, "source": source, "problems": problems})

