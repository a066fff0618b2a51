"""UI-format workflows (what the web app saves) converted to the API format that ``POST /prompt`` takes.

The result is the graph the web app itself queues (its ``graphToPrompt``): widget values mapped to input
names through the catalogue's ``input_order``, links resolved through legacy ``Reroute`` nodes, bypassed
nodes and subgraphs (ids ``outer:inner``), ``PrimitiveNode`` values copied into their targets, muted and
frontend-only nodes left out, and every node titled in ``_meta.title``.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..errors import WorkerError
from ..problems import invalid_workflow, problem
from . import catalogue as cat

log = logging.getLogger(__name__)

MODE_NEVER = 2
MODE_BYPASS = 4
# Nodes that exist only in the web app: they never reach the server.
VIRTUAL_TYPES = frozenset({"PrimitiveNode", "Reroute", "Note", "MarkdownNote"})
SUBGRAPH_INPUT_ID = "-10"
SUBGRAPH_OUTPUT_ID = "-20"
_SAVE_PREFIX_NAME = "filename_prefix"


def is_ui_workflow(workflow: Any) -> bool:
    """A UI workflow has a top-level ``nodes`` list and ``links``; an API graph is keyed by node id."""
    return isinstance(workflow, dict) and isinstance(workflow.get("nodes"), list) and "links" in workflow


def to_api_workflow(workflow: dict[str, Any], object_info: dict[str, Any], *,
                    rng: random.Random | None = None, now: datetime | None = None) -> dict[str, Any]:
    """The API-format graph for either format (API graphs are returned as a shallow-checked copy)."""
    if is_ui_workflow(workflow):
        try:
            return convert_ui_workflow(workflow, object_info, rng=rng, now=now)
        except WorkerError:
            raise
        except (TypeError, AttributeError, KeyError, IndexError, ValueError) as exc:
            # A UI workflow whose parts have the wrong JSON types (hand-edited or truncated files).
            what = f"not a well-formed ComfyUI UI workflow ({type(exc).__name__}: {exc})"
            raise invalid_workflow(f"workflow: {what}; save it again from ComfyUI, or send the API format",
                                   [problem(None, None, "malformed_ui_workflow", None, what, None)],
                                   field="workflow", exception_type=type(exc).__name__) from None
    if not isinstance(workflow, dict) or not workflow:
        raise invalid_workflow("workflow: must be a non-empty object",
                               [problem(None, None, "invalid_prompt", None, "must be a non-empty object", None)],
                               field="workflow")
    check_api_format(workflow)
    out: dict[str, Any] = {}
    for node_id, node in workflow.items():
        copy = dict(node)
        if isinstance(copy.get("inputs"), dict):
            copy["inputs"] = dict(copy["inputs"])
        out[str(node_id)] = copy
    return out


def check_api_format(workflow: dict[str, Any]) -> None:
    """The minimal shape of an API-format graph, every malformed node named, so it gets a clear error
    rather than an exception further on or an HTTP 500 from ComfyUI."""
    problems = []
    for node_id, node in workflow.items():
        if not isinstance(node, dict):
            problems.append(problem(str(node_id), None, "invalid_node", None, "node is not an object", None))
        elif not isinstance(node.get("class_type"), str) or not node["class_type"]:
            problems.append(problem(str(node_id), None, "invalid_node", None, "node has no class_type", None))
        elif not isinstance(node.get("inputs", {}), dict):
            problems.append(problem(str(node_id), node["class_type"], "invalid_node", None,
                                    "inputs is not an object", None))
    if problems:
        first = problems[0]
        raise invalid_workflow(f"workflow node {first['node_id']}: {first['message']} (API format expected)",
                               problems)


def conversion_error(node: dict[str, Any] | None, what: str, path: tuple[str, ...] = ()) -> WorkerError:
    """An INVALID_WORKFLOW error naming the node (id, type, title) and what could not be converted."""
    details: dict[str, Any] = {"problem": what}
    node_id = None
    if node is not None:
        node_id = ":".join([*path, str(node.get("id"))])
        details.update(node_id=node_id, node_type=node.get("type"), node_title=node.get("title"))
        where = f"node {node_id} ({node.get('type')}" + (f", {node.get('title')!r}" if node.get("title") else "") + ")"
        message = f"cannot convert the UI workflow: {where}: {what}"
    else:
        message = f"cannot convert the UI workflow: {what}"
    found = problem(node_id, node.get("type") if node else None, "conversion_error", None, what,
                    node.get("title") if node else None)
    return invalid_workflow(message, [found], **details)


# ------------------------------------------------------------------------------------------------
# Graph model


@dataclass(frozen=True)
class _Link:
    origin_id: str
    origin_slot: int
    target_id: str
    target_slot: int
    type: Any


@dataclass
class _Graph:
    nodes: dict[str, dict[str, Any]]
    links: dict[str, _Link]
    definition: dict[str, Any] | None = None  # the subgraph definition, for graphs inside a subgraph


def _parse_links(raw: Any) -> dict[str, _Link]:
    links: dict[str, _Link] = {}
    for item in raw or []:
        if isinstance(item, list) and len(item) >= 5:
            link_id, origin, oslot, target, tslot = item[:5]
            ltype = item[5] if len(item) > 5 else None
        elif isinstance(item, dict):
            link_id, origin, oslot = item.get("id"), item.get("origin_id"), item.get("origin_slot")
            target, tslot, ltype = item.get("target_id"), item.get("target_slot"), item.get("type")
        else:
            continue
        try:
            links[str(link_id)] = _Link(str(origin), int(oslot), str(target), int(tslot), ltype)
        except (TypeError, ValueError):
            raise conversion_error(None, f"link {link_id!r} has a malformed slot index") from None
    return links


def _graph(raw: dict[str, Any], definition: dict[str, Any] | None = None) -> _Graph:
    nodes: dict[str, dict[str, Any]] = {}
    for node in raw.get("nodes") or []:
        if not isinstance(node, dict) or "id" not in node:
            raise conversion_error(None, "a node entry has no id")
        nodes[str(node["id"])] = node
    return _Graph(nodes, _parse_links(raw.get("links")), definition)


@dataclass
class _Dto:
    """One node at one place in the flattened graph (the web app's ExecutableNodeDTO)."""

    node: dict[str, Any]
    graph: _Graph
    path: tuple[str, ...]
    instance: _Dto | None  # the subgraph instance that contains this node
    inputs: list[dict[str, Any]] = field(default_factory=list)
    subgraph: _Graph | None = None  # set when this node is a subgraph instance
    group: dict[str, Any] | None = None  # set for inner nodes of a legacy group node

    @property
    def id(self) -> str:
        return ":".join([*self.path, str(self.node["id"])])

    @property
    def mode(self) -> int:
        mode = self.node.get("mode", 0)
        return mode if isinstance(mode, int) else 0

    @property
    def type(self) -> str:
        return str(self.node.get("type"))


_Resolved = tuple[str, Any]  # ("link", (exec_id, slot)) or ("value", value)


class _Converter:
    def __init__(self, ui: dict[str, Any], object_info: dict[str, Any], rng: random.Random,
                 now: datetime) -> None:
        self.ui = ui
        self.object_info = object_info
        self.rng = rng
        self.now = now
        definitions = _dedupe_subgraph_node_ids(ui)
        self.subgraphs: dict[str, dict[str, Any]] = {
            str(d.get("id")): d for d in definitions if isinstance(d, dict)}
        self.group_nodes: dict[str, Any] = (ui.get("extra") or {}).get("groupNodes") or {}
        self.dtos: dict[str, _Dto] = {}
        self.subgraph_graphs: dict[str, _Graph] = {}
        # PrimitiveNode values pushed into their targets: (id(graph), node id) -> {widget: value}
        self.primitive_values: dict[tuple[int, str], dict[str, Any]] = {}
        self.promoted_cache: dict[int, dict[int, bool]] = {}
        self.root = _graph(ui)

    # --- flattening -------------------------------------------------------------------------------
    def flatten(self) -> None:
        for node in _execution_order(self.root):
            self._add(node, self.root, (), None, depth=0)

    def _subgraph_graph(self, sg_id: str) -> _Graph:
        if sg_id not in self.subgraph_graphs:
            self.subgraph_graphs[sg_id] = _graph(self.subgraphs[sg_id], self.subgraphs[sg_id])
        return self.subgraph_graphs[sg_id]

    def _add(self, node: dict[str, Any], graph: _Graph, path: tuple[str, ...], instance: _Dto | None,
             depth: int) -> None:
        dto = _Dto(node, graph, path, instance, inputs=list(node.get("inputs") or []))
        node_type = dto.type
        if node_type in self.subgraphs:
            if depth > 32:
                raise conversion_error(node, "subgraphs nest more than 32 levels (a subgraph contains itself?)",
                                       path)
            definition = self.subgraphs[node_type]
            dto.subgraph = self._subgraph_graph(node_type)
            dto.inputs = _instance_inputs(node, definition)
            self.dtos[dto.id] = dto
            if depth == 0 and dto.mode in (MODE_NEVER, MODE_BYPASS):
                # The web app skips the contents of a muted or bypassed top-level instance only; a muted
                # instance nested inside a subgraph still contributes its inner nodes.
                return
            inner_path = (*path, str(node["id"]))
            for inner in _execution_order(dto.subgraph):
                self._add(inner, dto.subgraph, inner_path, dto, depth + 1)
            return
        if _group_name(node_type) is not None:
            self._add_group(dto)
            return
        self.dtos[dto.id] = dto

    def _add_group(self, dto: _Dto) -> None:
        name = _group_name(dto.type)
        definition = self.group_nodes.get(name) if name is not None else None
        if not isinstance(definition, dict):
            raise conversion_error(dto.node, f"group node definition {name!r} is missing from extra.groupNodes",
                                   dto.path)
        self.dtos[dto.id] = dto
        dto.group = definition
        _expand_group(self, dto, definition)

    # --- primitives -------------------------------------------------------------------------------
    def apply_primitives(self) -> None:
        graphs = [self.root, *[self._subgraph_graph(s) for s in self.subgraphs]]
        for graph in graphs:
            for node in graph.nodes.values():
                if node.get("type") != "PrimitiveNode" or node.get("mode", 0) == MODE_NEVER:
                    continue
                values = node.get("widgets_values")
                if not isinstance(values, list) or not values:
                    continue
                value = values[0]
                for output in node.get("outputs") or []:
                    for link, _target, target_input in _link_targets(graph, output.get("links")):
                        widget = target_input.get("widget") or {}
                        name = widget.get("name") or target_input.get("name")
                        if name:
                            self.primitive_values.setdefault((id(graph), link.target_id), {})[name] = value

    # --- link resolution --------------------------------------------------------------------------
    def resolve_input(self, dto: _Dto, slot: int, visited: set[str], want_type: Any = None) -> _Resolved | None:
        key = f"{id(dto.graph)}:{dto.id}[I]{slot}"
        if key in visited:
            raise conversion_error(dto.node, f"circular link resolution at input {slot}", dto.path)
        visited.add(key)
        if slot < 0 or slot >= len(dto.inputs):
            raise conversion_error(dto.node, f"no input slot {slot}", dto.path)
        outer = dto.inputs[slot].get("_outer")
        if outer is not None:
            return self.resolve_input(outer[0], outer[1], visited, want_type)
        link_id = dto.inputs[slot].get("link")
        if link_id is None:
            return None
        link = dto.graph.links.get(str(link_id))
        if link is None:
            if dto.group is not None:
                return None
            raise conversion_error(dto.node, f"input {dto.inputs[slot].get('name')!r} refers to link {link_id}, "
                                   "which the workflow does not contain", dto.path)
        if dto.instance is not None and link.origin_id == SUBGRAPH_INPUT_ID:
            return self._resolve_from_instance_input(dto, link)
        origin = dto.graph.nodes.get(link.origin_id)
        if origin is None:
            raise conversion_error(dto.node, f"input {dto.inputs[slot].get('name')!r} is linked to node "
                                   f"{link.origin_id}, which does not exist", dto.path)
        origin_dto = self.dtos.get(":".join([*dto.path, link.origin_id]))
        if origin_dto is None:
            raise conversion_error(origin, "node could not be placed in the graph", dto.path)
        return self.resolve_output(origin_dto, link.origin_slot,
                                   want_type if want_type is not None else dto.inputs[slot].get("type"), visited)

    def _resolve_from_instance_input(self, dto: _Dto, link: _Link) -> _Resolved | None:
        instance = dto.instance
        assert instance is not None
        if link.origin_slot >= len(instance.inputs):
            raise conversion_error(instance.node, f"subgraph input {link.origin_slot} does not exist",
                                   instance.path)
        outer = instance.inputs[link.origin_slot]
        if outer.get("link") is None:
            found, value = self.promoted_value(instance, link.origin_slot)
            return ("value", value) if found else None
        return self.resolve_input(instance, link.origin_slot, set())

    def resolve_output(self, dto: _Dto, slot: int, want_type: Any, visited: set[str]) -> _Resolved | None:
        key = f"{id(dto.graph)}:{dto.id}[O]{slot}"
        if key in visited:
            raise conversion_error(dto.node, f"circular link resolution at output {slot}", dto.path)
        visited.add(key)
        if dto.mode == MODE_NEVER:
            return None
        if dto.mode == MODE_BYPASS:
            index = _bypass_slot_index(dto, slot, want_type)
            if index == -1:
                log.debug("bypassed node %s has no input matching type %s; link dropped", dto.id, want_type)
                return None
            return self.resolve_input(dto, index, visited)
        if dto.subgraph is not None:
            return self._resolve_subgraph_output(dto, slot, want_type, visited)
        if dto.group is not None and dto.node.get("_group_outputs") is not None:
            mapping = dto.node["_group_outputs"]
            if slot >= len(mapping):
                return None
            inner_dto = self.dtos[mapping[slot][0]]
            return self.resolve_output(inner_dto, mapping[slot][1], want_type, visited)
        if dto.type in VIRTUAL_TYPES or dto.type == "PrimitiveNode":
            if slot < len(dto.inputs):
                return self.resolve_input(dto, slot, visited, want_type)
            return None
        return ("link", (dto.id, slot))

    def _resolve_subgraph_output(self, dto: _Dto, slot: int, want_type: Any,
                                 visited: set[str]) -> _Resolved | None:
        assert dto.subgraph is not None and dto.subgraph.definition is not None
        outputs = dto.subgraph.definition.get("outputs") or []
        if slot >= len(outputs):
            raise conversion_error(dto.node, f"subgraph output {slot} does not exist", dto.path)
        link_ids = outputs[slot].get("linkIds") or []
        if not link_ids:
            return None
        link = dto.subgraph.links.get(str(link_ids[0]))
        if link is None:
            raise conversion_error(dto.node, f"subgraph output {outputs[slot].get('name')!r} refers to a "
                                   "missing link", dto.path)
        if link.origin_id == SUBGRAPH_INPUT_ID:
            # An input wired straight through to an output.
            if link.origin_slot < len(dto.inputs) and dto.inputs[link.origin_slot].get("link") is None:
                found, value = self.promoted_value(dto, link.origin_slot)
                return ("value", value) if found else None
            return self.resolve_input(dto, link.origin_slot, visited)
        inner = self.dtos.get(":".join([*dto.path, str(dto.node["id"]), link.origin_id]))
        if inner is None:
            raise conversion_error(dto.node, f"subgraph output {outputs[slot].get('name')!r} comes from node "
                                   f"{link.origin_id}, which the subgraph does not contain", dto.path)
        return self.resolve_output(inner, link.origin_slot, want_type, visited)

    # --- promoted widgets -------------------------------------------------------------------------
    def promoted_value(self, instance: _Dto, input_index: int) -> tuple[bool, Any]:
        """The value of a subgraph instance's promoted widget for one of its inputs, if it has one."""
        assert instance.subgraph is not None and instance.subgraph.definition is not None
        promoted = self._promoted_inputs(instance)
        name = instance.inputs[input_index].get("name")
        if input_index not in promoted:
            return False, None
        named = instance.node.get("widgets_values_named")
        if isinstance(named, dict) and name in named:
            return True, named[name]
        values = instance.node.get("widgets_values")
        if isinstance(values, list):
            compensate = len(values) > len(promoted)
            pos = 0
            for idx, has_control in promoted.items():
                if idx == input_index:
                    if pos < len(values) and values[pos] is not None:
                        return True, values[pos]
                    break
                pos += 2 if (compensate and has_control) else 1
        return self._interior_value(instance, input_index)

    def _promoted_inputs(self, instance: _Dto) -> dict[int, bool]:
        """Input index -> whether its interior widget has a control_after_generate companion."""
        cached = self.promoted_cache.get(id(instance.node))
        if cached is not None:
            return cached
        assert instance.subgraph is not None and instance.subgraph.definition is not None
        result: dict[int, bool] = {}
        for index, sg_input in enumerate(instance.subgraph.definition.get("inputs") or []):
            target = self._interior_widget(instance.subgraph, sg_input)
            if target is not None:
                result[index] = target[2]
        self.promoted_cache[id(instance.node)] = result  # kept here: the caller's workflow is never written to
        return result

    def _interior_widget(self, graph: _Graph, sg_input: dict[str, Any]) -> tuple[dict[str, Any], str, bool] | None:
        for _link, node, target_input in _link_targets(graph, sg_input.get("linkIds")):
            widget = target_input.get("widget")
            node_type = str(node.get("type"))
            if widget and node_type in self.subgraphs:
                nested = self._subgraph_graph(node_type)
                for inner_input in (nested.definition or {}).get("inputs") or []:
                    if inner_input.get("name") == target_input.get("name"):
                        found = self._interior_widget(nested, inner_input)
                        if found is not None:
                            return found
                continue
            if widget:
                info = cat.class_info(self.object_info, node_type)
                has_control = False
                if info is not None:
                    for spec in cat.declared_inputs(info):
                        if spec.name == widget.get("name"):
                            has_control = cat.has_seed_control(spec)
                return node, str(widget.get("name")), has_control
        return None

    def _interior_value(self, instance: _Dto, input_index: int) -> tuple[bool, Any]:
        assert instance.subgraph is not None and instance.subgraph.definition is not None
        sg_input = (instance.subgraph.definition.get("inputs") or [])[input_index]
        found = self._interior_widget(instance.subgraph, sg_input)
        if found is None:
            return False, None
        node, widget_name, _ = found
        info = cat.class_info(self.object_info, str(node.get("type")))
        if info is None:
            return False, None
        values, _ = cat.widget_values(info, node.get("widgets_values"))
        if widget_name in values:
            return True, values[widget_name]
        return False, None

    # --- output -----------------------------------------------------------------------------------
    def build(self) -> dict[str, Any]:
        output: dict[str, Any] = {}
        for dto in list(self.dtos.values()):
            if dto.subgraph is not None or dto.group is not None and dto.node.get("_group_outputs") is not None:
                continue
            if dto.type in VIRTUAL_TYPES or dto.mode in (MODE_NEVER, MODE_BYPASS):
                continue
            output[dto.id] = self._node_entry(dto)
        for entry in output.values():
            for name, value in list(entry["inputs"].items()):
                if isinstance(value, list) and len(value) == 2 and value[0] not in output:
                    del entry["inputs"][name]
        return output

    def _node_entry(self, dto: _Dto) -> dict[str, Any]:
        info = cat.class_info(self.object_info, dto.type)
        inputs: dict[str, Any] = {}
        if info is not None:
            overrides = self.primitive_values.get((id(dto.graph), str(dto.node["id"])))
            saved = dto.node.get("widgets_values")
            if saved is not None and not isinstance(saved, (list, dict)):
                raise conversion_error(dto.node, "widgets_values must be a list or an object", dto.path)
            values, _ = cat.widget_values(info, saved, overrides)
            for name, value in values.items():
                spec = next((s for s in cat.declared_inputs(info) if s.name == name), None)
                value = self._serialize(dto, name, spec, value)
                inputs[name] = {"__value__": value} if isinstance(value, list) else value
        elif isinstance(dto.node.get("widgets_values"), dict):
            inputs.update(dto.node["widgets_values"])
        for index, slot in enumerate(dto.inputs):
            resolved = self.resolve_input(dto, index, set())
            if resolved is None:
                continue
            kind, payload = resolved
            name = slot.get("name")
            if kind == "value":
                inputs[name] = {"__value__": payload} if isinstance(payload, list) else payload
            else:
                inputs[name] = [str(payload[0]), int(payload[1])]
        return {"inputs": inputs, "class_type": dto.type, "_meta": {"title": _title(dto.node, info)}}

    def _serialize(self, dto: _Dto, name: str, spec: cat.InputSpec | None, value: Any) -> Any:
        if spec is None or not isinstance(value, str):
            return value
        if spec.type == "STRING" and spec.options.get("dynamicPrompts"):
            return dynamic_prompt(value, self.rng)
        if name == _SAVE_PREFIX_NAME:
            return self.text_replacements(value)
        return value

    def text_replacements(self, text: str) -> str:
        """``%date:FORMAT%`` and ``%Title.widget%`` in save prefixes, as the web app expands them."""
        def replace(match: re.Match[str]) -> str:
            token = match.group(1)
            if token.startswith("date:"):
                return _format_date(token[5:], self.now)
            parts = token.split(".")
            if len(parts) != 2:
                return match.group(0)
            title, widget = parts
            for node in self.root.nodes.values():
                props = node.get("properties") or {}
                if node.get("title") == title or props.get("Node name for S&R") == title:
                    info = cat.class_info(self.object_info, str(node.get("type")))
                    if info is None:
                        continue
                    values, _ = cat.widget_values(info, node.get("widgets_values"))
                    if widget in values:
                        return str(values[widget]).replace("/", "_").replace("\\", "_")
            return match.group(0)

        return re.sub(r"%([^%]+)%", replace, text)


def convert_ui_workflow(ui: dict[str, Any], object_info: dict[str, Any], *,
                        rng: random.Random | None = None, now: datetime | None = None) -> dict[str, Any]:
    """Convert a UI workflow (schema 0.4 or 1) to the API graph the web app would queue.

    ``rng`` resolves ``{a|b}`` choices in dynamic-prompt text (the web app picks at random); ``now`` fills
    ``%date:…%`` in save prefixes.
    """
    if not is_ui_workflow(ui):
        raise conversion_error(None, "not a UI workflow (expected top-level 'nodes' and 'links')")
    conv = _Converter(ui, object_info, rng or random.Random(), now or datetime.now())
    conv.apply_primitives()
    conv.flatten()
    try:
        return conv.build()
    except RecursionError:
        raise conversion_error(None, "links form a loop that cannot be resolved") from None


# ------------------------------------------------------------------------------------------------
# Helpers


def _link_targets(graph: _Graph, link_ids: Any) -> Iterator[tuple[_Link, dict[str, Any], dict[str, Any]]]:
    """The (link, target node, target input) of each link id that leads to an existing input slot."""
    for link_id in link_ids or []:
        link = graph.links.get(str(link_id))
        node = graph.nodes.get(link.target_id) if link is not None else None
        inputs = (node.get("inputs") or []) if node is not None else []
        if link is not None and node is not None and link.target_slot < len(inputs):
            yield link, node, inputs[link.target_slot]


def _execution_order(graph: _Graph) -> list[dict[str, Any]]:
    """Nodes in the saved execution order (``order``), falling back to file order."""
    nodes = list(graph.nodes.values())
    return sorted(nodes, key=lambda n: (n.get("order") if isinstance(n.get("order"), int) else 1 << 30))


def _title(node: dict[str, Any], info: dict[str, Any] | None) -> str:
    title = node.get("title")
    if isinstance(title, str) and title:
        return title
    if info is not None and info.get("display_name"):
        return str(info["display_name"])
    return str(node.get("type"))


def _instance_inputs(node: dict[str, Any], definition: dict[str, Any]) -> list[dict[str, Any]]:
    """A subgraph instance has one input per subgraph input; the saved node lists only some of them."""
    saved = list(node.get("inputs") or [])
    used: set[int] = set()
    result: list[dict[str, Any]] = []
    for sg_input in definition.get("inputs") or []:
        match = None
        for i, item in enumerate(saved):
            if i not in used and item.get("name") == sg_input.get("name"):
                match = i
                break
        entry = {"name": sg_input.get("name"), "type": sg_input.get("type"), "link": None}
        if match is not None:
            used.add(match)
            entry["link"] = saved[match].get("link")
            if saved[match].get("widget"):
                entry["widget"] = saved[match]["widget"]
        result.append(entry)
    return result


def _numeric_id(node_id: Any) -> int | None:
    if isinstance(node_id, bool):
        return None
    if isinstance(node_id, int):
        return node_id
    text = str(node_id)
    return int(text) if text.lstrip("-").isdigit() and str(int(text)) == text else None


def _dedupe_subgraph_node_ids(ui: dict[str, Any]) -> list[dict[str, Any]]:
    """Subgraph definitions with node ids that clash with an id seen before renumbered, as the web app
    does when it loads a workflow: the ids (and so the ``outer:inner`` ids) it queues are the new ones.

    Ids are taken in order: the root graph's, then each definition's nodes in file order; a clash gets the
    next free number after the graph's last node id, which every id met so far also advances.
    """
    definitions = [d for d in (ui.get("definitions") or {}).get("subgraphs") or [] if isinstance(d, dict)]
    state = ui.get("state") if isinstance(ui.get("state"), dict) else {}
    last = state.get("lastNodeId", ui.get("last_node_id"))
    ids = _IdAllocator(last if isinstance(last, int) and not isinstance(last, bool) else 0,
                       {str(n.get("id")) for n in ui.get("nodes") or [] if isinstance(n, dict)})
    result = []
    for definition in definitions:
        remap: dict[str, int] = {}
        nodes = [ids.take(node, remap) if isinstance(node, dict) else node for node in definition.get("nodes") or []]
        result.append(_renumbered(definition, nodes, remap) if remap else definition)
    return result


class _IdAllocator:
    """The node ids met so far, and the next free one for a node whose id clashes."""

    def __init__(self, last_id: int, used_keys: set[str]) -> None:
        self.last_id = last_id
        self.used_keys = used_keys
        self.used_numbers = {n for n in (_numeric_id(k) for k in used_keys) if n is not None}

    def take(self, node: dict[str, Any], remap: dict[str, int]) -> dict[str, Any]:
        key = str(node.get("id"))
        if key in self.used_keys:
            while True:
                self.last_id += 1
                if self.last_id not in self.used_numbers:
                    break
            remap[key] = self.last_id
            self.used_numbers.add(self.last_id)
            self.used_keys.add(str(self.last_id))
            return {**node, "id": self.last_id}
        self.used_keys.add(key)
        number = _numeric_id(node.get("id"))
        if number is not None:
            self.used_numbers.add(number)
            self.last_id = max(self.last_id, number)
        return node


def _renumbered(definition: dict[str, Any], nodes: list[Any], remap: dict[str, int]) -> dict[str, Any]:
    """A definition with its nodes' new ids carried into its links and promoted widgets."""
    links = []
    for link in definition.get("links") or []:
        if isinstance(link, dict):
            link = {**link, "origin_id": remap.get(str(link.get("origin_id")), link.get("origin_id")),
                    "target_id": remap.get(str(link.get("target_id")), link.get("target_id"))}
        elif isinstance(link, list) and len(link) >= 5:
            link = [link[0], remap.get(str(link[1]), link[1]), link[2], remap.get(str(link[3]), link[3]), *link[4:]]
        links.append(link)
    widgets = [{**w, "id": remap.get(str(w.get("id")), w.get("id"))} if isinstance(w, dict) else w
               for w in definition.get("widgets") or []]
    return {**definition, "nodes": nodes, "links": links, "widgets": widgets}


def _types_compatible(a: Any, b: Any) -> bool:
    """The web app's ``LiteGraph.isValidConnection`` for slot types."""
    if not a or not b or a == b or a == "*" or b == "*" or a == 0 or b == 0:
        return True
    a_str, b_str = str(a).lower(), str(b).lower()
    if a_str == b_str:
        return True
    if "," not in a_str and "," not in b_str:
        return False
    a_set = {t.strip() for t in a_str.split(",")}
    b_set = {t.strip() for t in b_str.split(",")}
    return bool(a_set & b_set) or "*" in a_set or "*" in b_set


def _bypass_slot_index(dto: _Dto, slot: int, want_type: Any) -> int:
    inputs = dto.inputs
    if want_type in ("*", ""):
        return slot if len(inputs) > slot else 0
    outputs = dto.node.get("outputs") or []
    output_type = outputs[slot].get("type") if slot < len(outputs) else None
    if slot < len(inputs):
        same = inputs[slot].get("type")
        if _types_compatible(same, output_type) and _types_compatible(same, want_type):
            return slot
    for i, item in enumerate(inputs):
        if item.get("type") == want_type:
            return i
    for i, item in enumerate(inputs):
        if _types_compatible(item.get("type"), output_type) and _types_compatible(item.get("type"), want_type):
            return i
    return -1


def _group_name(node_type: str) -> str | None:
    for prefix in ("workflow>", "workflow/"):
        if node_type.startswith(prefix):
            return node_type[len(prefix):]
    return None


def _expand_group(conv: _Converter, dto: _Dto, definition: dict[str, Any]) -> None:
    """Legacy group nodes: inner nodes become ``<group id>:<index>``; the group's inputs feed the inner
    inputs that no inner link feeds, and its outputs are the inner outputs in order."""
    inner_nodes = [n for n in definition.get("nodes") or [] if isinstance(n, dict)]
    link_map, internal_sources = _group_links(definition.get("links") or [])
    externals = {(int(e[0]), int(e[1])) for e in definition.get("external") or [] if isinstance(e, list) and len(e) >= 2}
    group_inputs = list(dto.node.get("inputs") or [])
    group_values = dto.node.get("widgets_values")
    graph = _Graph({}, dict(link_map))
    path = (*dto.path, str(dto.node["id"]))
    outputs_map: list[tuple[str, int]] = []
    outer_input_index = value_pos = 0
    for index, raw in enumerate(inner_nodes):
        inner = {**raw, "id": index, "mode": raw.get("mode", dto.node.get("mode", 0))}
        inner["inputs"], outer_input_index = _group_inner_inputs(inner, index, link_map, outer_input_index,
                                                                 len(group_inputs))
        info = cat.class_info(conv.object_info, str(inner.get("type")))
        if isinstance(group_values, list) and info is not None:
            count = len(cat.widget_values(info, inner.get("widgets_values"))[1])
            if value_pos + count <= len(group_values):
                inner["widgets_values"] = group_values[value_pos:value_pos + count]
            value_pos += count
        graph.nodes[str(index)] = inner
        outputs_map += [(":".join([*path, str(index)]), out_slot) for out_slot, _ in enumerate(inner.get("outputs") or [])
                        if (index, out_slot) in externals or (index, out_slot) not in internal_sources]
    dto.node = {**dto.node, "_group_outputs": outputs_map}
    conv.dtos[dto.id] = dto
    for inner in graph.nodes.values():
        # Inputs fed from outside are resolved through the group node's own input slot.
        inputs = [{**entry, "link": None, "_outer": (dto, entry["link"][1])} if isinstance(entry.get("link"), tuple)
                  else entry for entry in inner["inputs"]]
        inner_dto = _Dto(inner, graph, path, None, inputs=inputs)
        inner_dto.group = definition
        conv.dtos[inner_dto.id] = inner_dto


def _group_links(raw_links: list[Any]) -> tuple[dict[str, _Link], set[tuple[int, int]]]:
    """A group definition's links (keyed ``g<n>``), and the (node, slot) outputs they start from."""
    link_map: dict[str, _Link] = {}
    sources: set[tuple[int, int]] = set()
    for n, item in enumerate(raw_links):
        if not isinstance(item, list) or len(item) < 4 or item[0] is None or item[2] is None:
            continue
        o, os_, t, ts = item[:4]
        link_map[f"g{n}"] = _Link(str(o), int(os_), str(t), int(ts), item[5] if len(item) > 5 else None)
        sources.add((int(o), int(os_)))
    return link_map, sources


def _group_inner_inputs(inner: dict[str, Any], index: int, link_map: dict[str, _Link], outer_index: int,
                        outer_count: int) -> tuple[list[dict[str, Any]], int]:
    """An inner node's inputs with their links: an inner link, else the group's next outer input."""
    inputs: list[dict[str, Any]] = []
    for slot, item in enumerate(inner.get("inputs") or []):
        entry = {**item, "link": None}
        for key, link in link_map.items():
            if int(link.target_id) == index and link.target_slot == slot:
                entry["link"] = key
        if entry["link"] is None and not item.get("widget"):
            if outer_index < outer_count:
                entry["link"] = ("outer", outer_index)
            outer_index += 1
        inputs.append(entry)
    return inputs, outer_index


_CHOICE_MARKS = re.compile(r"[\\{}|]")


def dynamic_prompt(text: str, rng: random.Random) -> str:
    """The web app's dynamic prompts: strip ``/* */`` and ``//`` comments, then pick one choice from each
    ``{a|b|c}`` (nested allowed); a backslash escapes the next character. One pass over the text, with
    the open choices on a stack of their own: no quadratic time and no recursion limit, whatever a caller
    sends."""
    text = strip_comments(text)
    frames: list[tuple[list[str], list[str]]] = [([], [])]  # (options so far, current text) per open choice
    pos = 0
    while pos < len(text):
        found = _CHOICE_MARKS.search(text, pos)
        if found is None:
            frames[-1][1].append(text[pos:])
            break
        frames[-1][1].append(text[pos:found.start()])
        mark, pos = found.group(), found.end()
        if mark == "\\":
            frames[-1][1].append(text[pos:pos + 1])
            pos += 1
        elif mark == "{":
            frames.append(([], []))
        elif mark == "|" and len(frames) > 1:
            options, current = frames[-1]
            options.append("".join(current))
            current.clear()
        elif mark == "}" and len(frames) > 1:
            options, current = frames.pop()
            frames[-1][1].append(rng.choice([*options, "".join(current)]))
        else:
            frames[-1][1].append(mark)  # `|` and `}` only mean something inside a choice
    # An unclosed choice stays as written. Each was opened at the end of the one around it, so the text is
    # every open choice in turn, outermost first: joined once, never level by level.
    pieces = frames[0][1]
    for options, current in frames[1:]:
        pieces.append("{")
        pieces.extend(option + "|" for option in options)
        pieces.extend(current)
    return "".join(pieces)


def strip_comments(text: str) -> str:
    r"""`/* */` and `//` comments removed in one pass (the regex `/\*[\s\S]*?\*/|//.*` the web app uses, in
    linear time: a caller's text of unclosed `/*` must not buy quadratic CPU). An unclosed `/*` stays text."""
    out: list[str] = []
    pos, start, closings = 0, 0, True
    while True:
        slash = text.find("/", pos)
        if slash == -1 or slash + 1 >= len(text):
            break
        nxt = text[slash + 1]
        if nxt == "*" and closings:
            end = text.find("*/", slash + 2)
            if end == -1:
                closings = False  # no comment can close after this point: every later `/*` is text
                pos = slash + 1
                continue
            out.append(text[start:slash])
            pos = start = end + 2
        elif nxt == "/":
            end = text.find("\n", slash + 2)
            out.append(text[start:slash])
            pos = start = len(text) if end == -1 else end
        else:
            pos = slash + 1
    out.append(text[start:])
    return "".join(out)


def _format_date(fmt: str, now: datetime) -> str:
    """The web app's date tokens (yyyy, yy, MM, M, dd, d, hh, h, mm, m, ss, s)."""
    tokens = {
        "yyyy": f"{now.year:04d}", "yy": f"{now.year % 100:02d}", "MM": f"{now.month:02d}", "M": str(now.month),
        "dd": f"{now.day:02d}", "d": str(now.day), "hh": f"{now.hour:02d}", "h": str(now.hour),
        "mm": f"{now.minute:02d}", "m": str(now.minute), "ss": f"{now.second:02d}", "s": str(now.second),
    }
    return re.sub(r"yyyy|yy|MM|M|dd|d|hh|h|mm|m|ss|s", lambda m: tokens[m.group(0)], fmt)
