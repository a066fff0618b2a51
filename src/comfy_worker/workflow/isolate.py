"""A job's outputs kept apart from every other job's, in the graph itself, before it is checked."""

from __future__ import annotations

from typing import Any

from . import catalogue as cat

# An input no node declares: ComfyUI ignores it when running the node but counts it in the node's cache
# key, so output nodes re-run for every job while everything upstream stays cached.
JOB_MARKER_INPUT = "_worker_job"


# Words that mark a text input as a place in the file system, in its name or in the catalogue's tooltip.
_PATH_NAME_HINTS = ("prefix", "folder", "path", "dir", "file")
_PATH_TOOLTIP_HINTS = ("folder", "path", "directory", "file")


def names_a_path(spec: cat.InputSpec) -> bool:
    """Whether the catalogue declares this input as a single-line text that names a file, folder or prefix
    (filename_prefix, SaveLoRA's prefix, the dataset savers' folder_name, Preview3D's model_file, a custom
    node's output_path). Multi-line texts are prompts; inputs fed only by links carry no literal path."""
    types = spec.type.split(",") if isinstance(spec.type, str) else []
    if "STRING" not in types or spec.options.get("multiline") or spec.options.get("forceInput"):
        return False
    tooltip = str(spec.options.get("tooltip") or "").lower()
    return (any(hint in spec.name.lower() for hint in _PATH_NAME_HINTS)
            or any(hint in tooltip for hint in _PATH_TOOLTIP_HINTS))


def isolate_outputs(graph: dict[str, Any], subfolder: str, token: str, object_info: dict[str, Any]) -> dict[str, Any]:
    """A copy of the graph whose output nodes write into the job's own subfolder and carry the job's marker,
    so ComfyUI's cache never replays another job's (possibly deleted) files. Every text input of an output
    node that names a file or folder (per the catalogue, see ``names_a_path``) is put under the job's
    subfolder, so whatever a node writes stays there and goes with
    the job's cleanup. Only output nodes change: loaded models and encoded prompts upstream stay cached."""
    isolated: dict[str, Any] = {}
    for node_id, node in graph.items():
        info = cat.class_info(object_info, str(node.get("class_type"))) if isinstance(node, dict) else None
        if info is None or not cat.is_output_node(info):
            isolated[node_id] = node
            continue
        inputs = dict(node.get("inputs") or {})
        specs = {spec.name: spec for spec in cat.expand_inputs(info, inputs)}
        for name, value in inputs.items():
            spec = specs.get(name)
            if isinstance(value, str) and spec is not None and names_a_path(spec):
                inputs[name] = f"{subfolder}/{value.lstrip('/') or 'ComfyUI'}"
        inputs[JOB_MARKER_INPUT] = token
        isolated[node_id] = {**node, "inputs": inputs}
    return isolated
