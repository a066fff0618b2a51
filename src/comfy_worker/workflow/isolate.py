"""A job's outputs kept apart from every other job's, in the graph itself, before it is checked."""

from __future__ import annotations

from typing import Any

# An input no node declares: ComfyUI ignores it when running the node but counts it in the node's cache
# key, so output nodes re-run for every job while everything upstream stays cached.
JOB_MARKER_INPUT = "_worker_job"


def isolate_outputs(graph: dict[str, Any], subfolder: str, token: str, output_classes: set[str]) -> dict[str, Any]:
    """A copy of the graph whose output nodes write into the job's own subfolder and carry the job's marker,
    so ComfyUI's cache never replays another job's (possibly deleted) files. Only output nodes change:
    loaded models and encoded prompts upstream stay cached between jobs."""
    isolated: dict[str, Any] = {}
    for node_id, node in graph.items():
        if not isinstance(node, dict) or node.get("class_type") not in output_classes:
            isolated[node_id] = node
            continue
        inputs = dict(node.get("inputs") or {})
        prefix = inputs.get("filename_prefix")
        if isinstance(prefix, str):
            inputs["filename_prefix"] = f"{subfolder}/{prefix.lstrip('/') or 'ComfyUI'}"
        inputs[JOB_MARKER_INPUT] = token
        isolated[node_id] = {**node, "inputs": inputs}
    return isolated
