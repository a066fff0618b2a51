"""The one shape of a workflow problem, as INVALID_WORKFLOW, MISSING_MODELS and POLICY_VIOLATION report it in
`details.problems`, whether the worker's pre-flight found it or ComfyUI refused the prompt."""

from __future__ import annotations

from typing import Any

from .errors import ErrorCode, WorkerError


def problem(node_id: str | None, class_type: str | None, kind: str | None, input_name: str | None,
            message: str | None, details: Any) -> dict[str, Any]:
    """One problem: the node (id and class type) and input it concerns, its kind, and what is wrong."""
    return {"node_id": node_id, "class_type": class_type, "type": kind, "input_name": input_name,
            "message": message, "details": details}


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


def invalid_workflow(message: str, problems: list[dict[str, Any]], **details: Any) -> WorkerError:
    """INVALID_WORKFLOW, always with `details.problems` (each in `problem`'s shape), whatever found it."""
    return WorkerError(ErrorCode.INVALID_WORKFLOW, message, {**details, "problems": problems})

