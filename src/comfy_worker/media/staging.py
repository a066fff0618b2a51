"""Stage a job's input media into ComfyUI: decode, check limits, upload into the job's own subfolder, and
rewrite the workflow's references to the names ComfyUI returns."""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from typing import Any

from PIL import Image

from ..comfy.client import ComfyClient, ComfyUnavailable
from ..errors import ErrorCode, WorkerError
from ..schema import InputImage
from ..settings import Settings
from .inputs import Slot, resolve_input
from .outputs import guess_mime

log = logging.getLogger("comfy_worker.media.staging")

@dataclass(frozen=True)
class StagedFile:
    requested_name: str
    reference: str  # the value a loader node takes: "<subfolder>/<name as stored by ComfyUI>"
    size: int


@dataclass(frozen=True)
class MediaRequest:
    """One input to fetch and stage: where it came from in the request, its value, and its file name."""

    field: str
    value: str
    name: str | None  # the caller's name (``images[].name``), or None to name it from its content
    slot: Slot = "image"


def check_images(images: list[InputImage], *, max_count: int) -> None:
    """Count and names of the `images` list, checked before anything is fetched."""
    if len(images) > max_count:
        raise WorkerError(ErrorCode.INVALID_INPUT, f"images: at most {max_count} images are accepted",
                          {"errors": [{"field": "images", "problem": f"{len(images)} given, limit {max_count}"}]})
    seen: set[str] = set()
    for i, item in enumerate(images):
        if item.name in seen:
            raise WorkerError(ErrorCode.INVALID_INPUT, f"images[{i}].name: duplicate name '{item.name}'",
                              {"errors": [{"field": f"images[{i}].name", "problem": "duplicate name"}]})
        seen.add(item.name)


def check_pixels(data: bytes, field: str, limit: int) -> None:
    """Refuse an image whose header announces more pixels than allowed (a decompression bomb is small on
    the wire and huge once ComfyUI decodes it). Only the header is read."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
    except Image.DecompressionBombError as exc:
        raise WorkerError(ErrorCode.INVALID_INPUT, f"{field}: image is larger than the limit of {limit} pixels "
                          f"({exc})", {"errors": [{"field": field, "problem": f"more than {limit} pixels"}]}) from None
    except (OSError, ValueError):
        return  # not an image Pillow can size; ComfyUI's loader judges it
    if width * height > limit:
        raise WorkerError(ErrorCode.INVALID_INPUT, f"{field}: image of {width}x{height} pixels is larger than the "
                          f"limit of {limit} pixels", {"errors": [{"field": field, "problem":
                                                                   f"{width}x{height} pixels, limit {limit}"}]})


def fetch_media(requests_: list[MediaRequest], *, settings: Settings, s3_defaults: Any,
                max_total: int) -> list[tuple[str, bytes]]:
    """Resolve every input (base64, data URI, https or s3 URL) within one job-wide byte budget."""
    files: list[tuple[str, bytes]] = []
    used = 0
    for index, req in enumerate(requests_):
        left = max_total - used
        if left <= 0:
            raise WorkerError(ErrorCode.INVALID_INPUT, f"{req.field}: the job's inputs together exceed "
                              f"{max_total} bytes", {"errors": [{"field": req.field,
                                                                 "problem": f"total input size exceeds {max_total}"}]})
        media = resolve_input(req.value, field=req.field, settings=settings, s3_defaults=s3_defaults,
                              slot=req.slot, max_bytes=left)
        used += len(media.data)
        if media.mime.startswith("image/"):
            check_pixels(media.data, req.field, min(settings.max_input_pixels, settings.max_pixels or settings.max_input_pixels))
        files.append((req.name or f"input-{index}{media.ext}", media.data))
    return files


def upload_files(client: ComfyClient, files: list[tuple[str, bytes]], subfolder: str) -> list[StagedFile]:
    staged = []
    for name, data in files:
        try:
            answer = client.upload_image(name, data, subfolder=subfolder, overwrite=True, mime=guess_mime(name))
        except ComfyUnavailable as exc:
            raise WorkerError(ErrorCode.COMFYUI_UNAVAILABLE, f"could not upload input '{name}' to ComfyUI: {exc}",
                              {"input": name}) from exc
        # Always use the name ComfyUI returns: it renames on collisions.
        stored = answer.get("name") or name
        sub = answer.get("subfolder", subfolder) or ""
        staged.append(StagedFile(requested_name=name, reference=f"{sub}/{stored}" if sub else stored,
                                 size=len(data)))
        log.debug("staged input %s as %s", name, staged[-1].reference)
    return staged


def rewrite_references(workflow: dict[str, Any], staged: list[StagedFile]) -> int:
    """Point every input whose value names a staged file at its staged location. Returns the count."""
    mapping: dict[str, str] = {}
    for item in staged:
        mapping[item.requested_name] = item.reference
        mapping[f"{item.requested_name} [input]"] = item.reference
    count = 0
    for node in workflow.values():
        inputs = node.get("inputs") if isinstance(node, dict) else None
        if not isinstance(inputs, dict):
            continue
        for key, value in inputs.items():
            if isinstance(value, str) and value in mapping:
                inputs[key] = mapping[value]
                count += 1
    return count
