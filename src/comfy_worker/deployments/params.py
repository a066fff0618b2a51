"""A request's `params` checked against a deployed workflow's manifest: every problem found at once, each
naming its parameter (`params.width`, or `params[2].width` in a batch), with "did you mean" for a name that
is close to a known one."""

from __future__ import annotations

from typing import Any

from ..errors import ErrorCode, WorkerError
from ..problems import closest
from .manifest import Manifest, check_value, json_type


def parameter_values(workflow_id: str, manifest: Manifest, params: dict[str, Any] | list[Any] | None, *,
                     max_text: int | None = None) -> list[dict[str, Any]]:
    """The values of every parameter that has one (given, else its default), one dict per parameter set (a
    single set is a batch of one). Raises INVALID_INPUT listing every problem."""
    batch = isinstance(params, list)
    sets: list[Any] = params if isinstance(params, list) else [{} if params is None else params]
    errors: list[dict[str, Any]] = []
    if batch and not sets:
        errors.append({"field": "params", "problem": "a batch needs at least one parameter set"})
    values = []
    for index, item in enumerate(sets):
        prefix = f"params[{index}]" if batch else "params"
        if not isinstance(item, dict):
            errors.append({"field": prefix, "problem": f"must be an object of parameter values, got {json_type(item)}"})
            continue
        found, problems = _one_set(manifest, item, prefix, max_text)
        values.append(found)
        errors.extend(problems)
    if errors:
        summary = "; ".join(f"{e['field']}: {e['problem']}" for e in errors[:5])
        if len(errors) > 5:
            summary += f"; and {len(errors) - 5} more"
        raise WorkerError(ErrorCode.INVALID_INPUT, f"invalid params for the deployed workflow {workflow_id!r}: "
                          f"{summary}", {"errors": errors, "workflow_id": workflow_id})
    return values


def _one_set(manifest: Manifest, given: dict[str, Any], prefix: str,
             max_text: int | None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    values: dict[str, Any] = {}
    errors: list[dict[str, Any]] = []
    known = list(manifest.params)
    for name, value in given.items():
        param = manifest.params.get(name)
        if param is None:
            errors.append(_unknown(prefix, str(name), known))
            continue
        checked, problem = check_value(param, value, max_text=max_text)
        if problem:
            errors.append({"field": f"{prefix}.{name}", "problem": problem})
        else:
            values[name] = checked
    for name, param in manifest.params.items():
        if name in given:
            continue
        if param.required:
            errors.append({"field": f"{prefix}.{name}", "problem": "required parameter is missing"})
        elif param.default is not None:
            values[name] = check_value(param, param.default)[0]
    return values, errors


def _unknown(prefix: str, name: str, known: list[str]) -> dict[str, Any]:
    close = closest(name, known)
    if close is not None:
        return {"field": f"{prefix}.{name}", "problem": f"unknown parameter; did you mean {close!r}?",
                "suggestion": f"{prefix}.{close}"}
    listed = ", ".join(known) if known else "none"
    return {"field": f"{prefix}.{name}", "problem": f"unknown parameter; this workflow takes: {listed}"}
