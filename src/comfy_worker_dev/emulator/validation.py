"""Prompt validation with the same checks, order and error JSON as ComfyUI's `validate_prompt`.

Where the real server lets a Python exception escape (a link to an absent node, a slot past the end of
RETURN_TYPES), the same operation is done here on the same kinds of values, so the exception type and
message match; only the traceback lines differ.
"""

from __future__ import annotations

import logging
import sys
import traceback
from typing import Any

from .catalogue import Catalogue

log = logging.getLogger(__name__)

Error = dict[str, Any]
Validated = dict[str, tuple[bool, list[Error], str]]

ANY_TYPE = "*"
MATCH_TYPE = "COMFY_MATCHTYPE_V3"
COMBO_TYPE = "COMBO"
# Nodes whose VALIDATE_INPUTS takes these inputs: their combo/min/max checks are skipped for them.
CUSTOM_VALIDATED: dict[str, tuple[str, ...]] = {"LoadImage": ("image",), "LoadImageMask": ("image",),
                                                 "LoadAudio": ("audio",), "LoadVideo": ("file",)}
# What their validate_inputs answers for a file that is not there.
_MISSING_FILE = {"LoadImage": "Invalid image file: {}", "LoadImageMask": "Invalid image file: {}",
                 "LoadAudio": "Invalid audio file: {}", "LoadVideo": "Invalid video file: {}"}


def full_type_name(klass: type) -> str:
    if klass.__module__ == "builtins":
        return klass.__qualname__
    return f"{klass.__module__}.{klass.__qualname__}"


def types_compatible(received: Any, expected: Any) -> bool:
    if received == expected:
        return True
    if ANY_TYPE in (received, expected) or MATCH_TYPE in (received, expected):
        return True
    if isinstance(received, list) and expected == COMBO_TYPE:
        return True
    if not isinstance(received, str) or not isinstance(expected, str):
        return False
    got = {t.strip() for t in received.split(",")}
    want = {t.strip() for t in expected.split(",")}
    if ANY_TYPE in got or ANY_TYPE in want:
        return True
    return bool(got & want)


def _is_opaque_widget(input_type: Any) -> bool:
    # Dynamic V3 widgets are expanded by the real server into nested inputs; the emulator does not
    # model them and accepts their values as given.
    return isinstance(input_type, str) and input_type.startswith("COMFY_") and input_type.endswith("_V3") \
        and input_type != MATCH_TYPE


class PromptValidator:
    def __init__(self, catalogue: Catalogue) -> None:
        self.catalogue = catalogue

    def validate_prompt(self, prompt: dict[str, Any], partial_targets: list[str] | None
                        ) -> tuple[bool, Error | None, list[str], dict[str, Any]]:
        outputs: list[str] = []
        for node_id in prompt:
            node = prompt[node_id]
            if "class_type" not in node:
                title = node.get("_meta", {}).get("title")
                return False, {
                    "type": "missing_node_type",
                    "message": f"Node '{title or f'ID #{node_id}'}' has no class_type. The workflow may be "
                               "corrupted or a custom node is missing.",
                    "details": f"Node ID '#{node_id}'",
                    "extra_info": {"node_id": node_id, "class_type": None, "node_title": title},
                }, [], {}
            class_type = node["class_type"]
            if not self.catalogue.has(class_type):
                title = node.get("_meta", {}).get("title", class_type)
                return False, {
                    "type": "missing_node_type",
                    "message": f"Node '{title}' not found. The custom node may not be installed.",
                    "details": f"Node ID '#{node_id}'",
                    "extra_info": {"node_id": node_id, "class_type": class_type, "node_title": title},
                }, [], {}
            if self.catalogue.is_output_node(class_type):
                if partial_targets is None or node_id in partial_targets:
                    if node_id not in outputs:
                        outputs.append(node_id)

        if not outputs:
            return False, {"type": "prompt_no_outputs", "message": "Prompt has no outputs", "details": "",
                           "extra_info": {}}, [], {}

        good: list[str] = []
        failures: list[tuple[str, list[Error]]] = []
        node_errors: dict[str, Any] = {}
        validated: Validated = {}
        for out in outputs:
            try:
                ok, reasons, _ = self.validate_inputs(prompt, out, validated)
            except Exception as ex:
                ok = False
                reasons = [{
                    "type": "exception_during_validation",
                    "message": "Exception when validating node",
                    "details": str(ex),
                    "extra_info": {"exception_type": full_type_name(type(ex)),
                                   "traceback": traceback.format_tb(sys.exc_info()[2])},
                }]
                validated[out] = (False, reasons, out)
            if ok:
                good.append(out)
                continue
            log.error("Failed to validate prompt for output %s", out)
            failures.append((out, reasons))
            for node_id, (node_ok, node_reasons, _) in validated.items():
                # Nodes invalid only because of an upstream node carry no errors and are not listed.
                if node_ok or not node_reasons:
                    continue
                if node_id not in node_errors:
                    node_errors[node_id] = {"errors": node_reasons, "dependent_outputs": [],
                                            "class_type": prompt[node_id]["class_type"]}
                node_errors[node_id]["dependent_outputs"].append(out)

        if not good:
            details = "\n".join(f"{e['message']}: {e['details']}" for _, errs in failures for e in errs)
            return False, {"type": "prompt_outputs_failed_validation",
                           "message": "Prompt outputs failed validation", "details": details,
                           "extra_info": {}}, [], node_errors
        return True, None, good, node_errors

    def validate_inputs(self, prompt: dict[str, Any], unique_id: str, validated: Validated,
                        visiting: list[str] | None = None) -> tuple[bool, list[Error], str]:
        visiting = [] if visiting is None else visiting
        if unique_id in validated:
            return validated[unique_id]
        if unique_id in visiting:
            path_nodes = visiting[visiting.index(unique_id):] + [unique_id]
            cycle_nodes = list(dict.fromkeys(path_nodes))
            path = " -> ".join(f"{n} ({prompt[n]['class_type']})" for n in path_nodes)
            for n in cycle_nodes:
                validated[n] = (False, [{"type": "dependency_cycle", "message": "Dependency cycle detected",
                                         "details": path,
                                         "extra_info": {"node_id": n, "cycle_nodes": cycle_nodes}}], n)
            return validated[unique_id]

        inputs = prompt[unique_id]["inputs"]
        class_type = prompt[unique_id]["class_type"]
        defs = self.catalogue.input_defs(class_type)
        custom_args = CUSTOM_VALIDATED.get(class_type, ())
        errors: list[Error] = []
        valid = True

        declared = [(name, "required", entry) for name, entry in defs["required"].items()]
        declared += [(name, "optional", entry) for name, entry in defs["optional"].items()
                     if name not in defs["required"]]
        for name, category, entry in declared:
            input_type = entry[0] if entry else None
            extra = entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {}
            if name not in inputs:
                if category == "required":
                    errors.append({"type": "required_input_missing", "message": "Required input is missing",
                                   "details": name, "extra_info": {"input_name": name}})
                continue
            val = inputs[name]
            info = [input_type, extra]
            if isinstance(val, list):
                if len(val) != 2:
                    errors.append({
                        "type": "bad_linked_input",
                        "message": "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                        "details": name,
                        "extra_info": {"input_name": name, "input_config": info, "received_value": val},
                    })
                    continue
                source_id = val[0]
                source_class = prompt[source_id]["class_type"]
                received = self.catalogue.return_types(source_class)[val[1]]
                if not types_compatible(received, input_type):
                    errors.append({
                        "type": "return_type_mismatch",
                        "message": "Return type mismatch between linked nodes",
                        "details": f"{name}, received_type({received}) mismatch input_type({input_type})",
                        "extra_info": {"input_name": name, "input_config": info, "received_type": received,
                                       "linked_node": val},
                    })
                    continue
                try:
                    visiting.append(unique_id)
                    try:
                        upstream = self.validate_inputs(prompt, source_id, validated, visiting)
                    finally:
                        visiting.pop()
                    if upstream[0] is False:
                        valid = False
                        continue
                except Exception as ex:
                    valid = False
                    validated[source_id] = (False, [{
                        "type": "exception_during_inner_validation",
                        "message": "Exception when validating inner node",
                        "details": str(ex),
                        "extra_info": {"input_name": name, "input_config": info,
                                       "exception_message": str(ex),
                                       "exception_type": full_type_name(type(ex)),
                                       "traceback": traceback.format_tb(sys.exc_info()[2]),
                                       "linked_node": val},
                    }], source_id)
                    continue
                continue

            if _is_opaque_widget(input_type):
                continue
            try:
                if isinstance(val, dict) and "__value__" in val:
                    val = val["__value__"]
                    inputs[name] = val
                if input_type == "INT":
                    val = int(val)
                    inputs[name] = val
                if input_type == "FLOAT":
                    val = float(val)
                    inputs[name] = val
                if input_type == "STRING":
                    val = str(val)
                    inputs[name] = val
                if input_type == "BOOLEAN":
                    val = bool(val)
                    inputs[name] = val
            except Exception as ex:
                errors.append({
                    "type": "invalid_input_type",
                    "message": f"Failed to convert an input value to a {input_type} value",
                    "details": f"{name}, {val}, {ex}",
                    "extra_info": {"input_name": name, "input_config": info, "received_value": val,
                                   "exception_message": str(ex)},
                })
                continue

            if name in custom_args:
                continue
            if "min" in extra and val < extra["min"]:
                errors.append({"type": "value_smaller_than_min",
                               "message": f"Value {val} smaller than min of {extra['min']}",
                               "details": name,
                               "extra_info": {"input_name": name, "input_config": info, "received_value": val}})
                continue
            if "max" in extra and val > extra["max"]:
                errors.append({"type": "value_bigger_than_max",
                               "message": f"Value {val} bigger than max of {extra['max']}",
                               "details": name,
                               "extra_info": {"input_name": name, "input_config": info, "received_value": val}})
                continue
            if isinstance(input_type, list) or input_type == COMBO_TYPE:
                options = extra.get("options", []) if input_type == COMBO_TYPE else input_type
                if extra.get("multiselect", False) and isinstance(val, list):
                    bad = [v for v in val if v not in options]
                else:
                    bad = [val] if val not in options else []
                if bad:
                    config: Any = info
                    if len(options) > 20:
                        listing = f"(list of length {len(options)})"
                        config = None
                    else:
                        listing = str(options)
                    errors.append({
                        "type": "value_not_in_list",
                        "message": "Value not in list",
                        "details": f"{name}: {', '.join(repr(v) for v in bad)} not in {listing}",
                        "extra_info": {"input_name": name, "input_config": config, "received_value": val},
                    })
                    continue

        for name in custom_args:
            if name not in inputs or isinstance(inputs[name], list):
                continue
            message = self._custom_check(class_type, name, inputs[name])
            if message is not None:
                errors.append({"type": "custom_validation_failed",
                               "message": "Custom validation failed for node",
                               "details": f"{name} - {message}", "extra_info": {"input_name": name}})

        prior = validated.get(unique_id, (True, [], unique_id))
        result = (prior[0] and valid and not errors, prior[1] + [e for e in errors if e not in prior[1]],
                  unique_id)
        validated[unique_id] = result
        return result

    def _custom_check(self, class_type: str, name: str, value: Any) -> str | None:
        if name in CUSTOM_VALIDATED.get(class_type, ()):
            path = self.catalogue.folders.annotated_path(str(value))
            if path is None or not path.exists():
                return _MISSING_FILE[class_type].format(value)
        return None
