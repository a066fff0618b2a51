"""The operator's rules for workflows: allowed and denied node types, size limits, and file names that
must stay inside their folders."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ..redaction import JOBS_SUBFOLDER
from . import catalogue as cat
from .limits import FRAME_KEYS, STEP_KEYS, GraphValues, Size, output_sizes

_DRIVE = re.compile(r"^[A-Za-z]:")
# Inputs whose value is a file name inside a ComfyUI folder (model, input or output prefix).
_FILE_INPUT_HINTS = ("_name", "filename", "image", "video", "audio", "file", "path", "model", "prefix")


@dataclass(frozen=True)
class Policy:
    """Limits set by the operator (``Settings``); empty or None means no limit."""

    node_allowlist: frozenset[str] = frozenset()
    node_denylist: frozenset[str] = frozenset()
    max_nodes: int | None = None
    max_pixels: int | None = None
    max_steps: int | None = None
    max_frames: int | None = None
    max_input_pixels: int | None = None  # an image loaded from the input folder has at most this many pixels
    job_folder: str | None = None  # the job's own subfolder: the only one under JOBS_SUBFOLDER it may name

    @classmethod
    def from_settings(cls, settings: Any, job_folder: str | None = None) -> Policy:
        return cls(
            job_folder=job_folder,
            node_allowlist=frozenset(_split(getattr(settings, "node_allowlist", ""))),
            node_denylist=frozenset(_split(getattr(settings, "node_denylist", ""))),
            max_nodes=getattr(settings, "max_nodes", None),
            max_pixels=getattr(settings, "max_pixels", None),
            max_steps=getattr(settings, "max_steps", None),
            max_frames=getattr(settings, "max_frames", None),
            max_input_pixels=getattr(settings, "max_input_pixels", None),
        )


def _split(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


@dataclass
class Violation:
    node_id: str | None
    class_type: str | None
    rule: str
    message: str
    input_name: str | None = None
    value: Any = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out = {"node_id": self.node_id, "class_type": self.class_type, "rule": self.rule, "message": self.message}
        if self.input_name is not None:
            out["input_name"] = self.input_name
            out["received_value"] = self.value
        out.update(self.extra)
        return out


# ComfyUI's folder annotations on a file name ("x.png [output]"): the only suffixes it reads as one.
ANNOTATIONS = (" [input]", " [output]", " [temp]")


def split_annotation(value: str) -> tuple[str, str | None]:
    """("x.png", "output") for "x.png [output]"; a bracketed suffix that is not an annotation stays part of
    the name (ComfyUI keeps it too)."""
    for annotation in ANNOTATIONS:
        if value.endswith(annotation):
            return value[: -len(annotation)], annotation.strip(" []")
    return value, None


def _names_other_job(value: str, job_folder: str | None) -> bool:
    """A file or folder name inside the per-job folders that is not the job's own (ComfyUI's folder lists
    show every job's staging folder)."""
    text = split_annotation(value.strip())[0].replace("\\", "/").strip("/")
    if text.split("/", 1)[0] != JOBS_SUBFOLDER:
        return False
    return not (job_folder and (text + "/").startswith(job_folder.rstrip("/") + "/"))


def escapes_folder(value: str) -> bool:
    """A file name that would leave its folder: ``..`` segments, absolute paths, drive letters."""
    text = split_annotation(value.strip())[0]
    if text.startswith(("/", "\\")) or _DRIVE.match(text):
        return True
    return any(part == ".." for part in re.split(r"[\\/]", text))


def _is_file_input(spec: cat.InputSpec | None, name: str) -> bool:
    if spec is not None and (spec.is_combo or spec.upload_kind):
        return True
    base = name.rsplit(".", 1)[-1].lower()
    return any(hint in base for hint in _FILE_INPUT_HINTS)


def check_policy(graph: dict[str, Any], object_info: dict[str, Any], policy: Policy) -> list[Violation]:
    """Every rule the API graph breaks."""
    found: list[Violation] = []
    if policy.max_nodes is not None and len(graph) > policy.max_nodes:
        found.append(Violation(None, None, "MAX_NODES",
                               f"the workflow has {len(graph)} nodes; the limit is {policy.max_nodes}"))
    for node_id, node in graph.items():
        if not isinstance(node, dict):
            continue
        class_type = node.get("class_type")
        if isinstance(class_type, str):
            if class_type in policy.node_denylist:
                found.append(Violation(node_id, class_type, "NODE_DENYLIST",
                                       f"node {node_id}: node type {class_type} is not allowed on this worker"))
            elif policy.node_allowlist and class_type not in policy.node_allowlist:
                found.append(Violation(node_id, class_type, "NODE_ALLOWLIST",
                                       f"node {node_id}: node type {class_type} is not in the allowed list"))
        inputs = node.get("inputs") if isinstance(node.get("inputs"), dict) else {}
        info = cat.class_info(object_info, class_type) if isinstance(class_type, str) else None
        specs = {s.name: s for s in cat.expand_inputs(info, inputs)} if info is not None else {}
        for name, value in inputs.items():
            if not isinstance(value, str) or not _is_file_input(specs.get(name), name):
                continue
            if escapes_folder(value):
                found.append(Violation(node_id, class_type, "PATH_ESCAPE",
                                       f"node {node_id} ({class_type}): input {name!r} names a file outside its "
                                       f"folder ({value!r}); use a plain name inside the folder",
                                       name, value))
            elif _names_other_job(value, policy.job_folder):
                found.append(Violation(node_id, class_type, "PATH_ESCAPE",
                                       f"node {node_id} ({class_type}): input {name!r} names a folder of the "
                                       "worker's other jobs; send the file as an input instead", name, value))
            elif split_annotation(value)[1] in {"output", "temp"}:
                # Files in ComfyUI's output and temp folders are other jobs' results: never readable by a job.
                found.append(Violation(node_id, class_type, "PATH_ESCAPE",
                                       f"node {node_id} ({class_type}): input {name!r} reads {value!r} from "
                                       "ComfyUI's output or temp folder, which holds other jobs' files; send the "
                                       "file as an input instead", name, value))
    found.extend(_limits(graph, object_info, policy))
    return found


def _limits(graph: dict[str, Any], object_info: dict[str, Any], policy: Policy) -> list[Violation]:
    found: list[Violation] = []
    if policy.max_pixels is not None:
        sizes = output_sizes(graph, object_info, float(policy.max_input_pixels or policy.max_pixels))
        for node_id, size in sizes.items():
            violation = _pixels(node_id, graph[node_id].get("class_type"), size, policy.max_pixels)
            if violation is not None:
                found.append(violation)
    values = GraphValues(graph)
    for rule, limit, keys in (("MAX_STEPS", policy.max_steps, STEP_KEYS), ("MAX_FRAMES", policy.max_frames, FRAME_KEYS)):
        if limit is None:
            continue
        for node_id, node in graph.items():
            inputs = node.get("inputs") if isinstance(node, dict) and isinstance(node.get("inputs"), dict) else {}
            for key in (k for k in keys if k in inputs):
                value = values.number(node_id, key)
                if value is None and values.is_linked(node_id, key):
                    found.append(Violation(node_id, node.get("class_type"), rule,
                                           f"node {node_id} ({node.get('class_type')}): {key} comes from a link the "
                                           f"worker cannot follow to a number; give it as a number ({rule} is set)",
                                           key, inputs.get(key)))
                elif value is not None and value > limit:
                    found.append(Violation(node_id, node.get("class_type"), rule,
                                           f"node {node_id} ({node.get('class_type')}): {key}={value:g}; the limit "
                                           f"is {limit}", key, inputs.get(key)))
    return found


def _pixels(node_id: str, class_type: Any, size: Size | None, limit: int) -> Violation | None:
    label = f"node {node_id} ({class_type})"
    if size is None:
        return Violation(node_id, class_type, "MAX_PIXELS",
                         f"{label}: the size of its output cannot be bounded (it follows a link or an image's "
                         f"aspect the worker cannot know); give sizes as numbers (MAX_PIXELS is set)")
    if size.total <= limit:
        return None
    pixels = int(size.total)
    if size.width is not None and size.height is not None:
        what = f"{size.width:g}x{size.height:g}x{size.count:g} = {pixels} pixels"
    else:
        what = f"up to {pixels} pixels ({size.count:g} frames)"
    return Violation(node_id, class_type, "MAX_PIXELS", f"{label}: {what}; the limit is {limit}",
                     extra={"pixels": pixels})
