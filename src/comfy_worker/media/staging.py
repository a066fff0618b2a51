"""A job's input media: planned (named, and the graphs pointed at them) before the graphs are checked,
then fetched within the job's limits and put into the job's own folder of ComfyUI's input folder."""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from typing import Any

from PIL import Image

from ..comfy import ComfyConnection
from ..errors import ErrorCode, WorkerError, invalid_input
from ..schema import InputImage
from ..settings import Settings
from ..storage.s3 import S3Target
from ..workflow import MediaSlot
from .inputs import Slot, resolve_input

log = logging.getLogger("comfy_worker.media.staging")

# Staged files get the extension of what their slot takes: ComfyUI lists input files by extension for its
# validation, and its loaders read the content whatever the name says.
_EXT = {"image": ".png", "mask": ".png", "video": ".mp4", "audio": ".wav", "any": ".bin"}


@dataclass(frozen=True)
class MediaRequest:
    """One input to fetch and stage: where it came from in the request, its value, the name it gets in the
    job's folder, and the reference a loader node takes for it."""

    field: str
    value: str
    name: str
    reference: str
    slot: Slot = "image"


@dataclass
class StagingPlan:
    """Every input file of a job, named before anything is fetched, and each graph already pointing at them:
    the graphs ComfyUI gets are final before they are checked."""

    requests: list[MediaRequest]
    graphs: list[dict[str, Any]]


def plan_staging(images: list[InputImage], graphs: list[dict[str, Any]], slots: list[list[MediaSlot]],
                 folder: str, params: dict[str, str] | None = None) -> StagingPlan:
    """Name every input in the job's folder and point each graph at it: `images[]` under the caller's names
    (references by name in the graph are rewritten), `inputs` media under `input-<item>-<n><ext>`. `params`:
    the deployed workflow's parameter behind an `inputs` key, which messages then name (`params.image`)."""
    requests = [MediaRequest(f"images[{i}].image", image.image, image.name, f"{folder}/{image.name}")
                for i, image in enumerate(images)]
    by_name = {f"{image.name}{suffix}": f"{folder}/{image.name}" for image in images for suffix in ("", " [input]")}
    batch = len(graphs) > 1
    planned_graphs = []
    for item, (graph, item_slots) in enumerate(zip(graphs, slots)):
        graph = _with_references(graph, by_name)
        for n, slot in enumerate(item_slots):
            name = f"input-{item}-{n}{_EXT[slot.kind]}"
            source, key = ("params", params[slot.key]) if params and slot.key in params else ("inputs", slot.key)
            field = f"{source}[{item}].{key}" if batch else f"{source}.{key}"
            requests.append(MediaRequest(field, slot.value, name, f"{folder}/{name}", slot.kind))
            graph[slot.node_id] = {**graph[slot.node_id], "inputs": {**graph[slot.node_id]["inputs"],
                                                                     slot.input_name: f"{folder}/{name}"}}
        planned_graphs.append(graph)
    return StagingPlan(requests, planned_graphs)


def _with_references(graph: dict[str, Any], by_name: dict[str, str]) -> dict[str, Any]:
    """A copy of the graph whose inputs naming a staged file point at its place in the job's folder."""
    if not by_name:
        return dict(graph)
    out: dict[str, Any] = {}
    for node_id, node in graph.items():
        inputs = node.get("inputs") if isinstance(node, dict) else None
        if isinstance(inputs, dict) and any(isinstance(v, str) and v in by_name for v in inputs.values()):
            node = {**node, "inputs": {k: by_name.get(v, v) if isinstance(v, str) else v for k, v in inputs.items()}}
        out[node_id] = node
    return out


def stage(plan: StagingPlan, comfy: ComfyConnection, folder: str, *, settings: Settings,
          s3_defaults: S3Target | None) -> None:
    """Fetch every planned input (within the job's byte budget) and put it into the job's folder of
    ComfyUI's input folder, under its planned name."""
    files = fetch_media(plan.requests, settings=settings, s3_defaults=s3_defaults,
                        max_total=settings.max_input_total_bytes)
    for request, data in zip(plan.requests, files):
        stored = comfy.upload(request.name, data, folder)
        if stored != request.reference:
            # The graphs already name the planned file: a file stored under another name would not be found.
            raise WorkerError(ErrorCode.INTERNAL_ERROR, f"ComfyUI stored input {request.field} as {stored!r} "
                              f"instead of {request.reference!r}", {"field": request.field})
        log.debug("staged %s as %s (%d bytes)", request.field, stored, len(data))


def check_images(images: list[InputImage], *, max_count: int) -> None:
    """Count and names of the `images` list, checked before anything is fetched."""
    if len(images) > max_count:
        raise invalid_input("images", f"{len(images)} given, limit {max_count}", message=f"images: at most {max_count} images are accepted")
    seen: set[str] = set()
    for i, item in enumerate(images):
        if item.name in seen:
            raise invalid_input(f"images[{i}].name", "duplicate name", message=f"images[{i}].name: duplicate name '{item.name}'")
        seen.add(item.name)


def check_pixels(data: bytes, field: str, limit: int, total_limit: int | None = None) -> None:
    """Refuse an image whose header announces more pixels than allowed (a decompression bomb is small on
    the wire and huge once ComfyUI decodes it), per frame and, for animations (ComfyUI's loaders read every
    frame), over all its frames. Only headers are read."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
            frames = getattr(img, "n_frames", 1) if width * height <= limit else 1
    except Image.DecompressionBombError as exc:
        raise invalid_input(field, f"more than {limit} pixels",
                            message=f"{field}: image is larger than the limit of {limit} pixels ({exc})") from None
    except (OSError, ValueError):
        return  # not an image Pillow can size; ComfyUI's loader judges it
    if width * height > limit:
        raise invalid_input(field, f"{width}x{height} pixels, limit {limit}",
                            message=f"{field}: image of {width}x{height} pixels is larger than the limit of {limit} pixels")
    if total_limit is not None and width * height * frames > total_limit:
        raise invalid_input(field, f"{frames} frames of {width}x{height} pixels, limit {total_limit}",
                            message=f"{field}: {frames} frames of {width}x{height} pixels are more than the limit "
                            f"of {total_limit} pixels (MAX_PIXELS)")


def fetch_media(requests_: list[MediaRequest], *, settings: Settings, s3_defaults: S3Target | None,
                max_total: int) -> list[bytes]:
    """Resolve every input (base64, data URI, https or s3 URL) within one job-wide byte budget."""
    files: list[bytes] = []
    used = 0
    pixel_limit = min(settings.max_input_pixels, settings.max_pixels or settings.max_input_pixels)
    for req in requests_:
        left = max_total - used
        if left <= 0:
            raise invalid_input(req.field, f"total input size exceeds {max_total}",
                                message=f"{req.field}: the job's inputs together exceed {max_total} bytes")
        media = resolve_input(req.value, field=req.field, settings=settings, s3_defaults=s3_defaults,
                              slot=req.slot, max_bytes=left)
        used += len(media.data)
        if media.mime.startswith("image/"):
            check_pixels(media.data, req.field, pixel_limit, settings.max_pixels)
        files.append(media.data)
    return files
