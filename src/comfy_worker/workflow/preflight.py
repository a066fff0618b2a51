"""Pre-flight validation of an API graph against the live catalogue, before any upload or GPU time.

It follows ComfyUI's own rules (``execution.validate_prompt``): the same error ``type`` strings and the same
``node_errors`` shape, so a caller reads one format. It reports every problem at once and also catches what
ComfyUI lets through: strings given for booleans, dependency cycles, missing model files named with the
closest available names, and the operator's policy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..errors import ErrorCode, WorkerError
from ..problems import closest as closest_name
from ..problems import flatten_node_errors, problem
from . import catalogue as cat
from .models import closest, folder_files, model_folder
from .policy import Policy, Violation, check_policy

# Core nodes whose own validation function replaces ComfyUI's range and list checks for these inputs
# (``None``: for every input, the function takes **kwargs). /object_info does not say this.
CUSTOM_VALIDATED: dict[str, frozenset[str] | None] = {
    "LoadImage": frozenset({"image"}), "LoadImageMask": frozenset({"image"}), "LoadLatent": frozenset({"latent"}),
    "LoadVideo": frozenset({"file"}), "LoadAudio": frozenset({"audio"}), "Load3D": None, "Load3DAdvanced": None,
    "CustomCombo": None, "ComfySoftSwitchNode": frozenset({"switch", "on_false", "on_true"}),
    "SelectModelDevice": frozenset({"device"}), "SelectCLIPDevice": frozenset({"device"}),
    "SelectVAEDevice": frozenset({"device"}), "ModelAttentionBackend": frozenset({"attention"}),
    "FluxProUltraImageNode": frozenset({"aspect_ratio"}),
}
# Nodes that check link types themselves (their validation takes ``input_types``).
CUSTOM_TYPED = frozenset({"TripoConversionNode"})
_LINK_TYPES = {"return_type_mismatch", "bad_linked_input", "exception_during_validation",
               "exception_during_inner_validation", "dependency_cycle", "required_input_missing"}


@dataclass
class PreflightReport:
    """Every problem found, per node in ComfyUI's ``node_errors`` shape plus a summary by kind."""

    node_errors: dict[str, dict[str, Any]] = field(default_factory=dict)
    graph_errors: list[dict[str, Any]] = field(default_factory=list)
    missing_nodes: list[dict[str, Any]] = field(default_factory=list)
    invalid_connections: list[dict[str, Any]] = field(default_factory=list)
    invalid_values: list[dict[str, Any]] = field(default_factory=list)
    missing_models: list[dict[str, Any]] = field(default_factory=list)
    policy_violations: list[dict[str, Any]] = field(default_factory=list)
    output_nodes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.node_errors or self.graph_errors or self.missing_nodes or self.policy_violations)

    @property
    def only_missing_models(self) -> bool:
        if not self.missing_models or self.graph_errors or self.missing_nodes or self.policy_violations:
            return False
        return all(e.get("extra_info", {}).get("missing_model") for n in self.node_errors.values()
                   for e in n["errors"])

    def problems(self) -> list[dict[str, Any]]:
        """Every problem as one flat list (the same shape the worker gives ComfyUI's own refusals)."""
        flat = [problem(None, None, err.get("type"), None, err.get("message"), err.get("details"))
                for err in self.graph_errors]
        flat += [problem(m["node_id"], m["class_type"], "missing_node_type", None, m["problem"], None,
                         m.get("suggestion"))
                 for m in self.missing_nodes]
        flat += [problem(v.get("node_id"), v.get("class_type"), "policy_violation", v.get("input_name"),
                         v.get("message"), v.get("rule")) for v in self.policy_violations]
        flat += flatten_node_errors(self.node_errors)
        return flat

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "source": "preflight",
            "problems": self.problems(),
            "node_errors": self.node_errors,
            "errors": self.graph_errors,
            "missing_nodes": self.missing_nodes,
            "invalid_connections": self.invalid_connections,
            "invalid_values": self.invalid_values,
            "missing_models": self.missing_models,
            "policy_violations": self.policy_violations,
            "output_nodes": self.output_nodes,
        }

    def summary(self) -> str:
        parts: list[str] = []
        for err in self.graph_errors:
            parts.append(err["message"])
        for m in self.missing_nodes:
            hint = f"; did you mean {m['suggestion']!r}?" if m.get("suggestion") else ""
            parts.append(f"node {m['node_id']} ({m['class_type']}): unknown node type, not installed on this "
                         f"worker{hint}")
        for violation in self.policy_violations:
            parts.append(violation["message"])
        for node_id, entry in self.node_errors.items():
            for err in entry["errors"]:
                parts.append(f"node {node_id} ({entry['class_type']}): {err['message']}: {err['details']}")
        return "; ".join(parts)

    def raise_for_errors(self) -> None:
        """Raise one WorkerError holding the whole report, if there is anything to report."""
        if self.ok:
            return
        details = self.to_dict()
        if self.policy_violations and not (self.node_errors or self.graph_errors or self.missing_nodes):
            code = ErrorCode.POLICY_VIOLATION
            lead = "the workflow breaks this worker's rules"
        elif self.only_missing_models:
            code = ErrorCode.MISSING_MODELS
            lead = "the workflow needs model files this worker does not have"
        else:
            code = ErrorCode.INVALID_WORKFLOW
            lead = "the workflow failed validation"
        text = self.summary()
        if len(text) > 1500:
            text = text[:1500] + " …"
        raise WorkerError(code, f"{lead}: {text}", details)


def _missing_node(node_id: str, class_type: str, title: str, object_info: dict[str, Any]) -> dict[str, Any]:
    """A node whose type is not installed, with the installed type it was probably meant to be."""
    entry = {"node_id": node_id, "class_type": class_type, "node_title": title,
             "problem": "node type is not installed on this worker"}
    suggestion = closest_name(class_type, object_info)
    if suggestion is not None:
        entry["suggestion"] = suggestion
        entry["problem"] += f"; did you mean {suggestion!r}?"
    return entry


def _error(kind: str, message: str, details: str, **extra: Any) -> dict[str, Any]:
    return {"type": kind, "message": message, "details": details, "extra_info": extra}


def preflight(workflow: dict[str, Any], object_info: dict[str, Any], models: dict[str, list[str]] | None = None,
              policy: Policy | None = None, *, output_nodes: list[str] | None = None,
              input_files: list[str] | None = None, staged_files: list[str] | None = None) -> PreflightReport:
    """Validate an API-format graph.

    ``models``: live model file lists by folder (``/models/{folder}``); when given they, not the
    catalogue's possibly stale option lists, decide whether a model file exists. ``input_files``: files
    in ComfyUI's input folder, and ``staged_files``: names the job will upload; when either is given,
    LoadImage-style inputs must name one of them. ``output_nodes``: run only these output nodes
    (``partial_execution_targets``).
    """
    return _Validator(workflow, object_info, models, policy or Policy(), output_nodes,
                      input_files, staged_files).run()


class _Validator:
    def __init__(self, graph: dict[str, Any], object_info: dict[str, Any], models: dict[str, list[str]] | None,
                 policy: Policy, targets: list[str] | None, input_files: list[str] | None,
                 staged_files: list[str] | None) -> None:
        self.graph = graph
        self.object_info = object_info
        self.models = models
        self.policy = policy
        self.targets = targets
        self.files: set[str] | None = None
        if input_files is not None or staged_files is not None:
            self.files = set(input_files or []) | set(staged_files or [])
        self.report = PreflightReport()
        self.errors: dict[str, list[dict[str, Any]]] = {}

    def add(self, node_id: str, error: dict[str, Any]) -> None:
        self.errors.setdefault(node_id, []).append(error)
        node = self.graph.get(node_id) or {}
        entry = {"node_id": node_id, "class_type": node.get("class_type"), "type": error["type"],
                 "input_name": error["extra_info"].get("input_name"), "details": error["details"]}
        if error["type"] in _LINK_TYPES:
            self.report.invalid_connections.append(entry)
        elif not error["extra_info"].get("missing_model"):
            self.report.invalid_values.append(entry)

    def run(self) -> PreflightReport:
        report = self.report
        if not isinstance(self.graph, dict):
            report.graph_errors.append(_error("invalid_prompt", "the workflow must be an object of nodes", ""))
            return report
        self.known = self._known_nodes()
        outputs = self._output_nodes()
        report.output_nodes = outputs
        if not outputs and not report.missing_nodes:
            report.graph_errors.append(_error("prompt_no_outputs", "Prompt has no outputs", ""))
        reachable = self._upstream(outputs)
        for node_id in reachable:
            if node_id in self.known:
                self._validate_node(node_id, self.known[node_id])
        self._cycles(reachable)
        for violation in check_policy(self.graph, self.object_info, self.policy):
            report.policy_violations.append(violation.as_dict())
        dependents = self._dependents(outputs)
        for node_id, errors in self.errors.items():
            report.node_errors[node_id] = {
                "errors": errors,
                "dependent_outputs": sorted(dependents.get(node_id, set()), key=_id_key),
                "class_type": self.graph[node_id].get("class_type"),
            }
        return report

    def _known_nodes(self) -> dict[str, dict[str, Any]]:
        """The nodes whose type is installed, by id; the others reported as missing or malformed."""
        known: dict[str, dict[str, Any]] = {}
        for node_id, node in self.graph.items():
            class_type = node.get("class_type") if isinstance(node, dict) else None
            title = ((node.get("_meta") or {}).get("title") if isinstance(node, dict) else None) or class_type
            if not isinstance(class_type, str):
                self.report.missing_nodes.append({"node_id": node_id, "class_type": None, "node_title": title,
                                                  "problem": "node has no class_type"})
                continue
            info = cat.class_info(self.object_info, class_type)
            if info is None:
                self.report.missing_nodes.append(_missing_node(node_id, class_type, title, self.object_info))
                continue
            if not isinstance(node.get("inputs", {}), dict):
                self.report.graph_errors.append(_error("invalid_prompt", f"node {node_id}: inputs must be an "
                                                       "object", f"Node ID '#{node_id}'", node_id=node_id))
                continue
            known[node_id] = info
        return known

    def _output_nodes(self) -> list[str]:
        """The output nodes that will run: all of them, or those of `output_nodes` (each checked)."""
        outputs = [nid for nid, info in self.known.items() if cat.is_output_node(info)]
        if self.targets is None:
            return outputs
        for target in self.targets:
            if target not in self.graph:
                self.report.graph_errors.append(_error(
                    "invalid_output_node", f"output_nodes: node {target!r} is not in the workflow", target,
                    node_id=target))
            elif target in self.known and not cat.is_output_node(self.known[target]):
                self.report.graph_errors.append(_error(
                    "invalid_output_node", f"output_nodes: node {target} ({self.graph[target]['class_type']}) "
                    "is not an output node", target, node_id=target))
        return [nid for nid in outputs if nid in self.targets]

    # --- graph walks ------------------------------------------------------------------------------
    def _links(self, node_id: str) -> list[str]:
        node = self.graph.get(node_id)
        if not isinstance(node, dict) or not isinstance(node.get("inputs"), dict):
            return []
        return [v[0] for v in node["inputs"].values()
                if isinstance(v, list) and len(v) == 2 and isinstance(v[0], str) and v[0] in self.graph]

    def _upstream(self, outputs: list[str]) -> list[str]:
        seen: dict[str, None] = {}
        stack = list(reversed(outputs))
        while stack:
            node_id = stack.pop()
            if node_id in seen:
                continue
            seen[node_id] = None
            stack.extend(self._links(node_id))
        return list(seen)

    def _dependents(self, outputs: list[str]) -> dict[str, set[str]]:
        result: dict[str, set[str]] = {}
        for output in outputs:
            for node_id in self._upstream([output]):
                result.setdefault(node_id, set()).add(output)
        return result

    def _cycles(self, nodes: list[str]) -> None:
        state: dict[str, int] = {}
        reported: set[str] = set()
        for start in nodes:
            if state.get(start):
                continue
            stack: list[tuple[str, list[str]]] = [(start, self._links(start))]
            path = [start]
            state[start] = 1
            while stack:
                node_id, pending = stack[-1]
                if not pending:
                    stack.pop()
                    path.pop()
                    state[node_id] = 2
                    continue
                nxt = pending.pop()
                if state.get(nxt) == 1:
                    cycle = path[path.index(nxt):] + [nxt]
                    members = list(dict.fromkeys(cycle))
                    text = " -> ".join(f"{n} ({self.graph[n].get('class_type')})" for n in cycle)
                    for member in members:
                        if member not in reported:
                            reported.add(member)
                            self.add(member, _error("dependency_cycle", "Dependency cycle detected", text,
                                                    node_id=member, cycle_nodes=members))
                elif not state.get(nxt):
                    state[nxt] = 1
                    path.append(nxt)
                    stack.append((nxt, self._links(nxt)))

    # --- one node ---------------------------------------------------------------------------------
    def _validate_node(self, node_id: str, info: dict[str, Any]) -> None:
        node = self.graph[node_id]
        inputs: dict[str, Any] = node.get("inputs") or {}
        class_type = node["class_type"]
        is_output = cat.is_output_node(info)
        for spec in cat.expand_inputs(info, inputs):
            name = spec.name
            config = spec.raw
            if name not in inputs:
                if spec.required:
                    self.add(node_id, _error("required_input_missing", "Required input is missing",
                                             name.rsplit(".", 1)[-1], input_name=name))
                continue
            value = inputs[name]
            if isinstance(value, list):
                self._check_link(node_id, name, spec, value, is_output)
                continue
            if isinstance(value, dict) and "__value__" in value:
                value = value["__value__"]
            self._check_value(node_id, class_type, spec, value, config)

    def _check_link(self, node_id: str, name: str, spec: cat.InputSpec, value: list[Any], is_output: bool) -> None:
        config = spec.raw
        if len(value) != 2:
            self.add(node_id, _error("bad_linked_input",
                                     "Bad linked input, must be a length-2 list of [node_id, slot_index]", name,
                                     input_name=name, input_config=config, received_value=value))
            return
        source, slot = value
        kind = "exception_during_validation" if is_output else "exception_during_inner_validation"
        problem = None
        if not isinstance(source, str):
            problem = (f"{name}: the link source {source!r} is a {type(source).__name__}; node ids are strings "
                       f"(write [{str(source)!r}, {slot!r}])")
        elif source not in self.graph:
            problem = f"{name}: linked to node {source!r}, which is not in the workflow"
        elif isinstance(slot, bool) or not isinstance(slot, int):
            problem = f"{name}: the output index {slot!r} must be an integer"
        if problem is None and source in self.known:
            source_outputs = cat.outputs(self.known[source])
            if not -len(source_outputs) <= slot < len(source_outputs):
                problem = (f"{name}: node {source} ({self.graph[source]['class_type']}) has "
                           f"{len(source_outputs)} outputs; output {slot} does not exist")
            else:
                received = source_outputs[slot]
                if self.graph[node_id]["class_type"] not in CUSTOM_TYPED and not types_match(received, spec.type):
                    self.add(node_id, _error(
                        "return_type_mismatch", "Return type mismatch between linked nodes",
                        f"{name}, received_type({received}) mismatch input_type({spec.type})",
                        input_name=name, input_config=config, received_type=received, linked_node=value))
                return
        if problem is not None:
            self.add(node_id, _error(kind, "Exception when validating node" if is_output
                                     else "Exception when validating inner node", problem,
                                     input_name=name, linked_node=value))

    def _check_value(self, node_id: str, class_type: str, spec: cat.InputSpec, value: Any, config: Any) -> None:
        name = spec.name
        declared = spec.type
        coerced = value
        if isinstance(declared, str) and declared in cat.SCALAR_TYPES:
            problem = _coercion_problem(declared, value)
            if problem is not None:
                self.add(node_id, _error("invalid_input_type", f"Failed to convert an input value to a {declared} "
                                         "value", f"{name}, {value}, {problem}", input_name=name,
                                         input_config=config, received_value=value, exception_message=problem))
                return
            coerced = _coerce(declared, value)
        options = spec.options
        if spec.upload_kind:
            self._check_input_file(node_id, name, value)
            return
        if class_type in CUSTOM_VALIDATED:
            custom = CUSTOM_VALIDATED[class_type]
            if custom is None or name in custom:
                return
        if isinstance(coerced, (int, float)) and not isinstance(coerced, bool):
            minimum, maximum = options.get("min"), options.get("max")
            if isinstance(minimum, (int, float)) and coerced < minimum:
                self.add(node_id, _error("value_smaller_than_min", f"Value {coerced} smaller than min of {minimum}",
                                         name, input_name=name, input_config=config, received_value=coerced))
                return
            if isinstance(maximum, (int, float)) and coerced > maximum:
                self.add(node_id, _error("value_bigger_than_max", f"Value {coerced} bigger than max of {maximum}",
                                         name, input_name=name, input_config=config, received_value=coerced))
                return
        if spec.is_combo:
            self._check_combo(node_id, class_type, spec, coerced, config)

    def _check_combo(self, node_id: str, class_type: str, spec: cat.InputSpec, value: Any, config: Any) -> None:
        name = spec.name
        if spec.options.get("remote") or spec.options.get("remote_combo"):
            return
        folder = model_folder(class_type, spec, self.models)
        live = folder_files(self.models, folder) if (folder and self.models is not None) else None
        options = live if live is not None else (spec.combo_options or [])
        if live is not None:
            # Loaders list choices that are no file in the folder (VAELoader's "pixel_space", "taesd"):
            # the catalogue's names without an extension stay valid whatever the folder holds.
            options = [*live, *(o for o in spec.combo_options or []
                                if isinstance(o, str) and "." not in o.rsplit("/", 1)[-1] and o not in live)]
        values = value if (spec.options.get("multiselect") and isinstance(value, list)) else [value]
        invalid = [v for v in values if v not in options]
        if not invalid:
            return
        if len(options) > 20:
            list_info, shown_config = f"(list of length {len(options)})", None
        else:
            list_info, shown_config = str(options), config
        extra: dict[str, Any] = {"input_name": name, "input_config": shown_config, "received_value": value}
        if folder is not None:
            extra["missing_model"] = True
            extra["folder"] = folder
            for item in invalid:
                self.report.missing_models.append({
                    "node_id": node_id, "class_type": class_type, "input_name": name, "folder": folder,
                    "file": item, "closest": closest(str(item), list(options))})
        self.add(node_id, {"type": "value_not_in_list", "message": "Value not in list",
                           "details": f"{name}: {', '.join(repr(v) for v in invalid)} not in {list_info}",
                           "extra_info": extra})

    def _check_input_file(self, node_id: str, name: str, value: Any) -> None:
        if not isinstance(value, str) or not value:
            self.add(node_id, _error("custom_validation_failed", "Custom validation failed for node",
                                     f"{name} - Invalid image file: {value}", input_name=name))
            return
        if self.files is None:
            return
        plain = value
        if plain.endswith("]") and " [" in plain:
            plain, _, folder = plain[:-1].rpartition(" [")
            if folder in ("output", "temp"):
                return
        if plain not in self.files:
            self.add(node_id, _error("custom_validation_failed", "Custom validation failed for node",
                                     f"{name} - Invalid image file: {value} (not in the input folder and not among "
                                     "the job's files)", input_name=name, received_value=value))


def types_match(received: Any, declared: Any) -> bool:
    """ComfyUI's link type check: equal, either side ``*`` or a match type, or overlapping type lists."""
    if received == declared:
        return True
    if received in ("*", cat.MATCH_TYPE) or declared in ("*", cat.MATCH_TYPE):
        return True
    if isinstance(received, list) and declared == "COMBO":
        return True
    if isinstance(received, list) and isinstance(declared, list):
        return True
    if not isinstance(received, str) or not isinstance(declared, str):
        return False
    got = {t.strip() for t in received.split(",")}
    want = {t.strip() for t in declared.split(",")}
    return "*" in got or "*" in want or bool(got & want)


def _coercion_problem(declared: str, value: Any) -> str | None:
    """Why ComfyUI's coercion would fail, or why it would silently change the meaning (which it misses)."""
    if declared == "INT":
        try:
            int(value)
        except (TypeError, ValueError, OverflowError) as exc:
            return str(exc)
        if isinstance(value, float) and not math.isfinite(value):
            return f"{value} is not a finite number"
        return None
    if declared == "FLOAT":
        try:
            float(value)
        except (TypeError, ValueError) as exc:
            return str(exc)
        return None
    if declared == "BOOLEAN":
        if not isinstance(value, bool):
            return (f"expected true or false, got {type(value).__name__} {value!r} "
                    f"(ComfyUI would read it as {bool(value)})")
        return None
    if declared == "STRING" and isinstance(value, (dict, list)):
        return f"expected text, got {type(value).__name__}"
    return None


def _coerce(declared: str, value: Any) -> Any:
    if declared == "INT":
        return int(value)
    if declared == "FLOAT":
        return float(value)
    return value


def _id_key(node_id: str) -> tuple[int, Any]:
    return (0, int(node_id)) if node_id.isdigit() else (1, node_id)


__all__ = ["PreflightReport", "preflight", "types_match", "Violation"]
