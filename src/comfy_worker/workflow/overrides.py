"""The request's ``inputs``: node inputs set by ``"<node id>.<input>"`` or ``"<title>.<input>"`` without editing
the graph; media values found for staging; seeds randomised on request."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any

from ..errors import WorkerError, invalid_input
from ..problems import closest
from . import catalogue as cat
from .models import model_folder

MAX_KEY_CHARS = 512
_BASE64 = re.compile(r"^[A-Za-z0-9+/=\s]+$")
_MEDIA_PREFIXES = ("data:", "http://", "https://", "s3://")


# What a file input takes, by ComfyUI's upload flag on it (file_upload and plain combos take anything).
_MEDIA_KIND = {"image_upload": "image", "video_upload": "video", "animated_image_upload": "video",
               "audio_upload": "audio"}


@dataclass(frozen=True)
class MediaSlot:
    """An input whose value is media to stage first (base64, data URI, URL); staging names the file and
    points the input at it before the graph is checked."""

    node_id: str
    input_name: str
    value: str
    key: str  # the request key that set it
    kind: str = "any"  # image, video, audio or any: what the input's node loads


def _bad(key: str, problem: str, **details: Any) -> WorkerError:
    error = invalid_input(f"inputs.{key}", problem, message=f"inputs[{key!r}]: {problem}")
    error.details["errors"][0].update(details)  # what it concerns (node ids, the inputs a node has)
    return error


def _titles(graph: dict[str, Any]) -> dict[str, list[str]]:
    titles: dict[str, list[str]] = {}
    for node_id, node in graph.items():
        title = (node.get("_meta") or {}).get("title") if isinstance(node, dict) else None
        if isinstance(title, str) and title:
            titles.setdefault(title, []).append(node_id)
    return titles


def resolve_key(graph: dict[str, Any], key: str) -> tuple[str, str]:
    """``(node id, input name)`` for a request key; node ids win over titles, longer titles over shorter."""
    if not isinstance(key, str) or "." not in key:
        raise _bad(str(key)[:MAX_KEY_CHARS], "keys look like '<node id>.<input>' or '<node title>.<input>'")
    if len(key) > MAX_KEY_CHARS:
        # Each dot is a possible split between title and input: a long key of dots would cost quadratic CPU.
        raise _bad(key[:64] + "…", f"keys are at most {MAX_KEY_CHARS} characters")
    titles = _titles(graph)
    dots = [m.start() for m in re.finditer(r"\.", key)]
    for pos in reversed(dots):  # longest prefix first: titles may contain dots
        prefix, name = key[:pos], key[pos + 1:]
        if not name:
            continue
        if prefix in graph:
            return prefix, name
        ids = titles.get(prefix)
        if ids:
            if len(ids) > 1:
                raise _bad(key, f"title {prefix!r} names {len(ids)} nodes ({', '.join(ids)}); use the node id",
                           node_ids=ids)
            return ids[0], name
    prefix = key.rsplit(".", 1)[0]
    close = closest(prefix, [*titles, *graph])
    if close:
        raise _bad(key, f"no node has this id or title; did you mean {close!r}?", known_titles=sorted(titles)[:50],
                   suggestion=f"inputs.{close}.{key.rsplit('.', 1)[1]}")
    raise _bad(key, "no node has this id or title", known_titles=sorted(titles)[:50])


def _spec_for(graph: dict[str, Any], object_info: dict[str, Any], node_id: str, name: str,
              value: Any) -> cat.InputSpec | None:
    node = graph[node_id]
    info = cat.class_info(object_info, str(node.get("class_type")))
    if info is None:
        return None
    live = {**(node.get("inputs") or {}), name: value}
    for spec in cat.expand_inputs(info, live):
        if spec.name == name:
            return spec
    return None


def looks_like_media(value: Any) -> bool:
    """A value that is media to fetch or decode: a data URI, an http(s):// or s3:// URL, or base64 (64
    characters or more, no dot: never a file name)."""
    if not isinstance(value, str):
        return False
    return value.startswith(_MEDIA_PREFIXES) or bool(len(value) >= 64 and "." not in value and _BASE64.match(value))


def is_media_value(value: Any, spec: cat.InputSpec | None) -> bool:
    """Base64, a data URI or a URL given for an input that takes a file (per the catalogue: an upload or a
    file list). A text input keeps a text that looks like a URL as the text it is: it is never fetched."""
    if not isinstance(value, str) or spec is None:
        return False
    if value.startswith(_MEDIA_PREFIXES):
        return spec.upload_kind is not None or spec.is_combo
    return bool(spec.upload_kind and looks_like_media(value))


def apply_inputs(graph: dict[str, Any], inputs: dict[str, Any] | None,
                 object_info: dict[str, Any]) -> tuple[dict[str, Any], list[MediaSlot]]:
    """A copy of the API graph with the request's inputs set, and the media values the core must stage."""
    result = {nid: ({**node, "inputs": dict(node.get("inputs") or {})} if isinstance(node, dict) else node)
              for nid, node in graph.items()}
    media: list[MediaSlot] = []
    if not inputs:
        return result, media
    if not isinstance(inputs, dict):
        raise invalid_input("inputs", "must be an object",
                            message="inputs: must be an object of '<node>.<input>': value")
    for key, value in inputs.items():
        node_id, name = resolve_key(result, key)
        node = result[node_id]
        class_type = node.get("class_type")
        info = cat.class_info(object_info, str(class_type))
        if info is None:
            raise _bad(key, f"node {node_id} has type {class_type!r}, which this worker does not know",
                       node_id=node_id)
        spec = _spec_for(result, object_info, node_id, name, value)
        if spec is None:
            known = [s.name for s in cat.expand_inputs(info, node["inputs"])]
            close = closest(name, known)
            hint = f"did you mean {close!r}? " if close else ""
            raise _bad(key, f"node {node_id} ({class_type}) has no input {name!r}; {hint}its inputs are "
                       f"{', '.join(known)}", node_id=node_id, inputs=known,
                       **({"suggestion": f"inputs.{key[:len(key) - len(name)]}{close}"} if close else {}))
        if isinstance(value, list):
            value = {"__value__": value}  # a bare list would read as a link
        node["inputs"][name] = value
        # A URL as a loader's model file is a model to fetch (workflow.model_urls), never media to stage.
        if is_media_value(value, spec) and model_folder(str(class_type), spec, None) is None:
            media.append(MediaSlot(node_id, name, value, key, _MEDIA_KIND.get(spec.upload_kind or "", "any")))
    return result, media


def seed_inputs(graph: dict[str, Any], object_info: dict[str, Any]) -> list[tuple[str, str, cat.InputSpec]]:
    """Inputs that hold a seed: named seed/noise_seed, or flagged control_after_generate (INT only)."""
    found = []
    for node_id, node in graph.items():
        info = cat.class_info(object_info, str(node.get("class_type")))
        if info is None:
            continue
        inputs = node.get("inputs") or {}
        for spec in cat.expand_inputs(info, inputs):
            if spec.type != "INT" or spec.name not in inputs or isinstance(inputs[spec.name], list):
                continue
            if cat.has_seed_control(spec):
                found.append((node_id, spec.name, spec))
    return found


def randomize_seeds(graph: dict[str, Any], object_info: dict[str, Any], rng: random.Random | None = None,
                    keep: set[tuple[str, str]] | None = None) -> dict[str, int]:
    """Give every seed input a fresh value within its min/max; ``keep`` lists (node, input) pairs the
    request set explicitly. Returns ``{"<node>.<input>": seed}``."""
    rng = rng or random.SystemRandom()
    chosen: dict[str, int] = {}
    for node_id, name, spec in seed_inputs(graph, object_info):
        if keep and (node_id, name) in keep:
            continue
        low = spec.options.get("min", 0)
        high = spec.options.get("max", 0xFFFFFFFFFFFFFFFF)
        low = int(low) if isinstance(low, (int, float)) else 0
        high = int(high) if isinstance(high, (int, float)) else 0xFFFFFFFFFFFFFFFF
        seed = rng.randint(low, max(low, high))
        graph[node_id]["inputs"][name] = seed
        chosen[f"{node_id}.{name}"] = seed
    return chosen
