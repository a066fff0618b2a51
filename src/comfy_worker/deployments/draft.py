"""A first manifest for a workflow, for the operator to edit: a parameter for every file its loaders take,
every prompt text and seed, and every widget input of the nodes the author gave a title of their own, each
typed, limited and defaulted from ComfyUI's catalogue."""

from __future__ import annotations

import re
from typing import Any

import yaml

from ..workflow import catalogue as cat
from ..workflow import to_api_workflow
from ..workflow.models import model_folder

# Beyond this, integer limits are ComfyUI's "any 64-bit value" and say nothing a form could use.
_PLAIN_LIMIT = 2 ** 53
_MEDIA = {"image_upload": "image", "video_upload": "video", "animated_image_upload": "video",
          "audio_upload": "audio", "file_upload": "image"}
_SCALAR = {"INT": "integer", "FLOAT": "number", "BOOLEAN": "boolean", "STRING": "string"}
HEADER = """# Drafted from {source}: review it before deploying. Remove what callers should not set, tighten the
# limits, write descriptions. Types: string, integer, number, boolean, image, video, audio, mask.
# `sets` names node inputs as `inputs` does ("<node id or title>.<input>"). See docs/workflows.md.
"""


def draft_manifest(workflow: dict[str, Any], object_info: dict[str, Any]) -> dict[str, Any]:
    """The manifest (as data) for a workflow in API or UI format."""
    graph = to_api_workflow(workflow, object_info)
    titles: dict[str, int] = {}
    for node in graph.values():
        title = (node.get("_meta") or {}).get("title")
        titles[title] = titles.get(title, 0) + 1
    found: list[tuple[str, str, dict[str, Any]]] = []  # (input name, node label, param)
    for node_id in sorted(graph, key=_id_order):
        node = graph[node_id]
        info = cat.class_info(object_info, str(node.get("class_type")))
        if info is None:
            continue
        title = str((node.get("_meta") or {}).get("title") or node.get("class_type"))
        titled = title not in {node.get("class_type"), info.get("display_name")}
        where = title if titles.get(title) == 1 and "." not in title else node_id
        for spec in cat.expand_inputs(info, node.get("inputs") or {}):
            param = _param_for(spec, node, info, titled)
            if param is not None:
                found.append((spec.name, title, {"type": param.pop("type"), "sets": f"{where}.{spec.name}",
                                                 **param}))
    return {"description": "", "params": _named(found)}


def render_draft(manifest: dict[str, Any], source: str) -> str:
    return HEADER.format(source=source) + yaml.safe_dump(manifest, sort_keys=False, allow_unicode=True, width=110)


def _param_for(spec: cat.InputSpec, node: dict[str, Any], info: dict[str, Any], titled: bool) -> dict[str, Any] | None:
    inputs = node.get("inputs") or {}
    value = inputs.get(spec.name)
    if spec.name not in inputs or (isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)):
        return None  # unset, or linked: not a widget value
    class_type = str(node.get("class_type"))
    if spec.upload_kind is not None:
        kind = "mask" if class_type == "LoadImageMask" else _MEDIA[spec.upload_kind]
        return {"type": kind, "required": True, "description": f"The {kind} {class_type} loads."}
    declared = spec.type if isinstance(spec.type, str) and not spec.is_combo else "COMBO"
    prompt = declared == "STRING" and spec.options.get("multiline")
    seed = cat.has_seed_control(spec)
    if not (titled or prompt or seed) or (cat.is_output_node(info) and declared == "STRING"):
        return None  # output nodes' texts name files: the job's own folder decides those
    param: dict[str, Any] = {"type": "string" if declared == "COMBO" else _SCALAR.get(declared, "")}
    if not param["type"]:
        return None
    tooltip = spec.options.get("tooltip")
    param["description"] = str(tooltip) if tooltip else f"{spec.name} of {class_type}."
    if declared == "COMBO":
        options = list(spec.combo_options or [])
        param["choices"] = [value, *(o for o in options if o != value)] if model_folder(class_type, spec, None) \
            else (options if value in options else [value, *options])
    for key in ("min", "max"):
        bound = spec.options.get(key)
        if param["type"] in {"integer", "number"} and isinstance(bound, (int, float)) and abs(bound) < _PLAIN_LIMIT:
            param["minimum" if key == "min" else "maximum"] = bound
    if seed:
        param["description"] = (f"Seed of {class_type}; left out, the graph's {value} stays (or a random one with "
                                "execution_config.randomize_seeds).")
    else:
        param["default"] = value
    return param


def _named(found: list[tuple[str, str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Each parameter named after its input, or after its node and input where several share an input name."""
    counts: dict[str, int] = {}
    for name, _, _ in found:
        counts[name] = counts.get(name, 0) + 1
    params: dict[str, dict[str, Any]] = {}
    for name, title, param in found:
        base = _slug(name if counts[name] == 1 else f"{title} {name}")
        unique, n = base, 2
        while unique in params:
            unique, n = f"{base}_{n}", n + 1
        params[unique] = param
    return params


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or "param"
    return slug if not slug[0].isdigit() else f"p_{slug}"


def _id_order(node_id: str) -> tuple[int, Any]:
    return (0, int(node_id)) if node_id.isdigit() else (1, node_id)
