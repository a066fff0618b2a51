"""The operator's size limits (MAX_PIXELS, MAX_STEPS, MAX_FRAMES), measured where ComfyUI measures them.

A value counts as ComfyUI reads it: `{"__value__": x}` unwrapped, numbers given as strings converted (ComfyUI
converts INT and FLOAT inputs), and a link followed to the constant node it comes from. Sizes that only
links carry (an image scaled by a factor, a batch repeated) are bounded over the whole graph: every IMAGE,
LATENT, MASK and VIDEO output gets an upper bound of its pixels (width x height x batch x frames, in image
pixels for latents too), from the nodes whose arithmetic is known, and a bound no smaller than its inputs'
for any other node. A size that cannot be bounded is refused while MAX_PIXELS is set.

Assumptions, stated so an operator can weigh them: an upscale model enlarges at most 8 times per side; a
node not listed here does not enlarge what passes through it (for untrusted callers, allow only known node
types: NODE_ALLOWLIST); an image loaded from the input folder has at most MAX_INPUT_PIXELS pixels per frame
(staged inputs are checked against it, frames included).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import catalogue as cat

SIZED_TYPES = {"IMAGE", "LATENT", "MASK", "VIDEO"}
STEP_KEYS = ("steps",)
FRAME_KEYS = ("length", "frames", "num_frames", "frame_count", "video_frames")
BATCH_KEYS = ("batch_size", "batch", "amount")
_CONSTANT_INPUTS = ("value", "int", "float", "number")
UPSCALE_MODEL_FACTOR = 8


def coerce_number(value: Any) -> float | None:
    """A literal as ComfyUI reads an INT or FLOAT input; None when it is not one (a link, a text)."""
    if isinstance(value, dict) and "__value__" in value:
        value = value["__value__"]
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


@dataclass(frozen=True)
class Size:
    """An upper bound of one sized output: pixels per frame, frames (batch x length), and each side when
    the graph says it."""

    pixels: float
    count: float = 1.0
    width: float | None = None
    height: float | None = None

    @property
    def total(self) -> float:
        return self.pixels * self.count

    def scaled(self, factor: float, slack: float = 0.0) -> Size:
        """Each side times `factor`, plus `slack` for ComfyUI's rounding of the new side."""
        if self.width is not None and self.height is not None:
            width, height = self.width * factor + slack, self.height * factor + slack
            return Size(width * height, self.count, width, height)
        # Sides unknown: w*h = pixels with w, h >= 1, so w + h <= pixels + 1.
        pixels = self.pixels * factor * factor + slack * factor * (self.pixels + 1) + slack * slack
        return Size(pixels, self.count)


class GraphValues:
    """Numbers of a graph's inputs as ComfyUI will see them, links to constant nodes followed."""

    def __init__(self, graph: dict[str, Any]) -> None:
        self.graph = graph

    def number(self, node_id: str, name: str, depth: int = 0) -> float | None:
        value = (self.graph.get(node_id, {}).get("inputs") or {}).get(name)
        if _is_link(value) and depth < 32:
            source = self.graph.get(str(value[0]))
            if not isinstance(source, dict):
                return None
            inputs = source.get("inputs") or {}
            for key in _CONSTANT_INPUTS:
                if key in inputs:
                    return self.number(str(value[0]), key, depth + 1)
            return None
        return coerce_number(value)

    def is_linked(self, node_id: str, name: str) -> bool:
        return _is_link((self.graph.get(node_id, {}).get("inputs") or {}).get(name))


def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], (str, int)) \
        and isinstance(value[1], int) and not isinstance(value[1], bool)


def output_sizes(graph: dict[str, Any], object_info: dict[str, Any], input_pixels: float) -> dict[str, Size | None]:
    """An upper bound of each node's sized output (None: it cannot be bounded), for nodes that have one."""
    values = GraphValues(graph)
    sizes: dict[str, Size | None] = {}
    visiting: set[str] = set()

    def size_of(node_id: str) -> Size | None:
        if node_id in sizes:
            return sizes[node_id]
        if node_id in visiting:  # a cycle: the pre-flight reports it
            return None
        visiting.add(node_id)
        node = graph[node_id]
        inputs = [size_of(str(v[0])) for v in (node.get("inputs") or {}).values()
                  if _is_link(v) and str(v[0]) in graph and _sized(graph[str(v[0])], object_info)]
        rule = _RULES.get(str(node.get("class_type")))
        found = rule(values, node_id, inputs, input_pixels) if rule else _generic(values, node_id, inputs, node)
        visiting.discard(node_id)
        sizes[node_id] = found
        return found

    for node_id, node in graph.items():
        if isinstance(node, dict) and _sized(node, object_info):
            size_of(node_id)
    return sizes


def _sized(node: dict[str, Any], object_info: dict[str, Any]) -> bool:
    info = cat.class_info(object_info, str(node.get("class_type")))
    return bool(info) and any(t in SIZED_TYPES for t in info.get("output") or [] if isinstance(t, str))


Rule = Callable[[GraphValues, str, list["Size | None"], float], "Size | None"]


def _first(inputs: list[Size | None]) -> Size | None:
    return inputs[0] if inputs else None


def _frames(values: GraphValues, node_id: str) -> float | None:
    count = 1.0
    for keys in (BATCH_KEYS, FRAME_KEYS):
        for key in keys:
            if values.is_linked(node_id, key) or key in (values.graph[node_id].get("inputs") or {}):
                found = values.number(node_id, key)
                if found is None:
                    return None
                count *= max(found, 1.0)
                break
    return count


def _empty(values: GraphValues, node_id: str, inputs: list[Size | None], input_pixels: float) -> Size | None:
    width, height, count = values.number(node_id, "width"), values.number(node_id, "height"), _frames(values, node_id)
    if width is None or height is None or count is None:
        return None
    return Size(width * height, count, width, height)


def _scale_to(values: GraphValues, node_id: str, inputs: list[Size | None], input_pixels: float) -> Size | None:
    source, width, height = _first(inputs), values.number(node_id, "width"), values.number(node_id, "height")
    if source is None or width is None or height is None:
        return None
    if width > 0 and height > 0:
        return Size(width * height, source.count, width, height)
    if width <= 0 and height <= 0:
        return source
    if source.width is None or source.height is None:
        return None  # the other side follows the image's aspect, which the graph does not say
    given, other = (width, source.height / source.width) if width > 0 else (height, source.width / source.height)
    return Size(given * given * other, source.count, *((width, width * other) if width > 0 else (height * other, height)))


def _scale_by(values: GraphValues, node_id: str, inputs: list[Size | None], input_pixels: float) -> Size | None:
    source, factor = _first(inputs), values.number(node_id, "scale_by")
    # ComfyUI rounds each new side: half a pixel, or half a latent cell (4 image pixels) for latents.
    slack = 4.0 if values.graph[node_id].get("class_type") == "LatentUpscaleBy" else 0.5
    return None if source is None or factor is None else source.scaled(max(factor, 0.0), slack)


def _total_pixels(values: GraphValues, node_id: str, inputs: list[Size | None], input_pixels: float) -> Size | None:
    source, megapixels = _first(inputs), values.number(node_id, "megapixels")
    return None if source is None or megapixels is None else Size(megapixels * 1024 * 1024, source.count)


def _max_dimension(values: GraphValues, node_id: str, inputs: list[Size | None], input_pixels: float) -> Size | None:
    source, largest = _first(inputs), values.number(node_id, "largest_size")
    return None if source is None or largest is None else Size(largest * largest, source.count)


def _repeat(values: GraphValues, node_id: str, inputs: list[Size | None], input_pixels: float) -> Size | None:
    source, amount = _first(inputs), values.number(node_id, "amount")
    if source is None or amount is None:
        return None
    return Size(source.pixels, source.count * max(amount, 1.0), source.width, source.height)


def _batch(values: GraphValues, node_id: str, inputs: list[Size | None], input_pixels: float) -> Size | None:
    if len(inputs) < 2 or inputs[0] is None or inputs[1] is None:
        return None
    first, second = inputs[0], inputs[1]
    return Size(first.pixels, first.count + second.count, first.width, first.height)  # the second is resized


def _upscale_model(values: GraphValues, node_id: str, inputs: list[Size | None], input_pixels: float) -> Size | None:
    source = _first(inputs)
    return None if source is None else source.scaled(UPSCALE_MODEL_FACTOR)


def _pad(values: GraphValues, node_id: str, inputs: list[Size | None], input_pixels: float) -> Size | None:
    source = _first(inputs)
    sides = [values.number(node_id, k) for k in ("left", "right", "top", "bottom")]
    if source is None or source.width is None or source.height is None or any(s is None for s in sides):
        return None
    width = source.width + sides[0] + sides[1]  # type: ignore[operator]
    height = source.height + sides[2] + sides[3]  # type: ignore[operator]
    return Size(width * height, source.count, width, height)


def _load(values: GraphValues, node_id: str, inputs: list[Size | None], input_pixels: float) -> Size | None:
    return Size(input_pixels)


def _generic(values: GraphValues, node_id: str, inputs: list[Size | None], node: dict[str, Any]) -> Size | None:
    """A node whose arithmetic is not known: what it is asked to make (width x height x batch x frames),
    else no more than the largest of its sized inputs."""
    own = node.get("inputs") or {}
    if "width" in own and "height" in own:
        return _empty(values, node_id, inputs, 0.0)
    if not inputs:
        return Size(0.0, 1.0)  # it makes no sized data of its own the graph could enlarge
    if any(i is None for i in inputs):
        return None
    return max(inputs, key=lambda size: size.total)  # type: ignore[arg-type,return-value]


_RULES: dict[str, Rule] = {
    **{name: _empty for name in ("EmptyImage", "EmptyLatentImage", "EmptySD3LatentImage", "EmptyHunyuanLatentVideo",
                                 "EmptyLTXVLatentVideo", "EmptyMochiLatentVideo", "EmptyCosmosLatentVideo",
                                 "EmptyHunyuanImageLatent", "EmptyChromaRadianceLatentImage")},
    "ImageScale": _scale_to, "LatentUpscale": _scale_to,
    "ImageScaleBy": _scale_by, "LatentUpscaleBy": _scale_by,
    "ImageScaleToTotalPixels": _total_pixels, "ImageScaleToMaxDimension": _max_dimension,
    "RepeatImageBatch": _repeat, "RepeatLatentBatch": _repeat,
    "ImageBatch": _batch, "LatentBatch": _batch,
    "ImageUpscaleWithModel": _upscale_model, "ImagePadForOutpaint": _pad,
    "LoadImage": _load, "LoadImageMask": _load,
}
