"""A deployment checked against the live catalogue before it serves: converted (UI format), every parameter's
node inputs found and of its type, the graph with its defaults pre-flighted (node types, links, values,
models, the operator's policy). Pure: the catalogue and model lists come in as plain data."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import WorkerError
from ..problems import problem
from ..workflow import Policy, build_workflow, check_workflow, to_api_workflow
from ..workflow import catalogue as cat
from ..workflow.models import model_folder
from ..workflow.overrides import resolve_key
from .files import Source, broken
from .manifest import MEDIA_TYPES, Param, check_value, params_schema

# The upload kinds (ComfyUI's flags on a file input) each media parameter may feed; `file_upload` takes any.
_UPLOADS = {"image": {"image_upload"}, "mask": {"image_upload"}, "video": {"video_upload", "animated_image_upload"},
            "audio": {"audio_upload"}}
_SCALAR = {"integer": "INT", "number": "FLOAT", "boolean": "BOOLEAN"}


@dataclass(frozen=True)
class Target:
    """One node input a parameter sets."""

    node_id: str
    input_name: str

    @property
    def key(self) -> str:
        return f"{self.node_id}.{self.input_name}"


@dataclass
class Deployed:
    """A deployed workflow that passed its checks: what a request by name runs."""

    id: str
    source: Source
    targets: dict[str, list[Target]]
    notes: list[str] = field(default_factory=list)  # what the start-up check noticed without refusing it

    @property
    def version(self) -> str:
        return self.source.version

    @property
    def description(self) -> str:
        return self.source.manifest.description

    @property
    def params_schema(self) -> dict[str, Any]:
        return params_schema(self.id, self.source.manifest, self.version)

    def inputs_for(self, values: dict[str, Any]) -> dict[str, Any]:
        """`inputs` (node id.input -> value) that apply the parameter values to the graph."""
        return {target.key: value for name, value in values.items() for target in self.targets[name]}


def check_deployment(source: Source, catalogue: dict[str, Any], *, models: dict[str, list[str]] | None,
                     input_files: list[str] | None, policy: Policy,
                     fetchable: Callable[[list[dict[str, Any]]], bool] = lambda missing: False) -> Deployed:
    """The deployment ready to serve, or the WorkerError that says why it cannot (the code and details a
    request by its name then gets). Model files that `fetchable` says will be fetched on first use (models.yaml
    `on_demand`) do not keep it from serving."""
    graph = to_api_workflow(source.workflow, catalogue)  # a conversion error is the reason as it is
    targets, problems = resolve_targets(source.manifest.params, graph, catalogue, models)
    if problems:
        raise broken("its manifest does not fit the workflow: " + "; ".join(
            f"{p['details']}: {p['message']}" for p in problems[:5]), problems)
    defaults = {name: check_value(param, param.default)[0] for name, param in source.manifest.params.items()
                if param.default is not None}
    resolved = build_workflow(graph, catalogue, inputs={t.key: value for name, value in defaults.items()
                                                        for t in targets[name]})
    # Media parameters replace their inputs' files per request: the graph's own names need not exist.
    placeholders = [str(graph[t.node_id]["inputs"].get(t.input_name)) for name, param in
                    source.manifest.params.items() if param.type in MEDIA_TYPES for t in targets[name]]
    report = check_workflow(resolved, catalogue, models=models, policy=policy, input_files=input_files,
                            staged_files=placeholders)
    deployed = Deployed(source.id, source, targets)
    if report.only_missing_models and fetchable(report.missing_models):
        deployed.notes.append("model files fetched on first use: " + ", ".join(
            f"{m['folder']}/{m['file']}" for m in report.missing_models))
    else:
        report.raise_for_errors()
    return deployed


def resolve_targets(params: dict[str, Param], graph: dict[str, Any], catalogue: dict[str, Any],
                    models: dict[str, list[str]] | None) -> tuple[dict[str, list[Target]], list[dict[str, Any]]]:
    """Each parameter's node inputs, found in the converted graph; every mismatch as a problem that names
    the parameter (`details`), the node and the input."""
    targets: dict[str, list[Target]] = {}
    problems: list[dict[str, Any]] = []
    owners: dict[str, str] = {}
    for name, param in params.items():
        targets[name] = []
        for key in param.sets:
            try:
                node_id, input_name = resolve_key(graph, key)
            except WorkerError as err:
                problems.append(problem(None, None, "unknown_target", None, f"sets {key!r}: "
                                        + err.details["errors"][0]["problem"], f"params.{name}"))
                continue
            target = Target(node_id, input_name)
            found = _target_problem(param, target, graph, catalogue, models)
            if target.key in owners:
                found = f"{target.key} is already set by parameter {owners[target.key]!r}"
            if found:
                problems.append(problem(node_id, graph[node_id].get("class_type"), "param_mismatch", input_name,
                                        found, f"params.{name}"))
                continue
            owners[target.key] = name
            targets[name].append(target)
    return targets, problems


def _target_problem(param: Param, target: Target, graph: dict[str, Any], catalogue: dict[str, Any],
                    models: dict[str, list[str]] | None) -> str | None:
    node = graph[target.node_id]
    class_type = str(node.get("class_type"))
    info = cat.class_info(catalogue, class_type)
    if info is None:
        return f"node {target.node_id} has type {class_type!r}, which this worker does not know"
    current = (node.get("inputs") or {}).get(target.input_name)
    specs = {s.name: s for s in cat.expand_inputs(info, node.get("inputs") or {})}
    spec = specs.get(target.input_name)
    if spec is None:
        return f"node {target.node_id} ({class_type}) has no input {target.input_name!r}; its inputs are " \
               f"{', '.join(specs)}"
    if isinstance(current, list) and len(current) == 2 and isinstance(current[0], str):
        return f"{target.key} is linked to node {current[0]}; set the input of the node it comes from"
    return _type_problem(param, spec, class_type, models)


def _type_problem(param: Param, spec: cat.InputSpec, class_type: str,
                  models: dict[str, list[str]] | None) -> str | None:
    declared = spec.type if isinstance(spec.type, str) else "COMBO"
    if param.type in MEDIA_TYPES:
        kind = spec.upload_kind
        if kind == "file_upload" or kind in _UPLOADS[param.type]:
            return None
        return f"a {param.type} parameter needs an input that loads a {param.type} file; {spec.name} is " \
               f"{kind or declared}"
    if declared == "*":
        return None  # takes any value (PreviewAny's source)
    if param.type == "string":
        if spec.is_combo and spec.upload_kind is None:
            return _choices_problem(param, spec, class_type, models)
        return None if declared == "STRING" else f"a string parameter cannot set a {declared} input"
    if declared != _SCALAR[param.type]:
        return f"a {param.type} parameter cannot set a {declared} input"
    return _range_problem(param, spec)


def _choices_problem(param: Param, spec: cat.InputSpec, class_type: str,
                     models: dict[str, list[str]] | None) -> str | None:
    options = spec.combo_options or []
    if param.choices is None:
        shown = ", ".join(repr(o) for o in options[:20]) + (" …" if len(options) > 20 else "")
        return f"{spec.name} takes one of a list: declare the parameter's choices (the node offers {shown})"
    if model_folder(class_type, spec, models) is not None:
        return None  # model files: checked per request against the live lists (and on-demand models)
    missing = [c for c in param.choices if c not in options]
    return f"choices {', '.join(repr(c) for c in missing)} are not offered by {spec.name}" if missing else None


def _range_problem(param: Param, spec: cat.InputSpec) -> str | None:
    low, high = spec.options.get("min"), spec.options.get("max")
    for value in (param.minimum, param.maximum, *(param.choices or [])):
        if value is None or not isinstance(value, (int, float)):
            continue
        if isinstance(low, (int, float)) and value < low:
            return f"{value:g} is below the input's minimum {low:g}"
        if isinstance(high, (int, float)) and value > high:
            return f"{value:g} is above the input's maximum {high:g}"
    return None
