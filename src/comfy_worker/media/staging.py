"""Stage a job's input media into ComfyUI: decode, check limits, upload into the job's own subfolder, and
rewrite the workflow's references to the names ComfyUI returns."""

from __future__ import annotations

import base64
import binascii
import logging
import re
from dataclasses import dataclass
from typing import Any

from ..comfy.client import ComfyClient, ComfyUnavailable
from ..errors import ErrorCode, WorkerError
from ..schema import InputImage
from .outputs import guess_mime

log = logging.getLogger("comfy_worker.media.staging")

_DATA_URI = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[^;,]*)*?);base64,", re.IGNORECASE)


@dataclass(frozen=True)
class StagedFile:
    requested_name: str
    reference: str  # the value a loader node takes: "<subfolder>/<name as stored by ComfyUI>"
    size: int


def decode_base64_media(value: str, *, field: str, max_bytes: int) -> bytes:
    """Decode base64 or a base64 data URI, refusing oversized payloads before decoding them."""
    match = _DATA_URI.match(value[:256])
    payload = value[match.end():] if match else value
    payload = "".join(payload.split())
    # 4 base64 characters carry 3 bytes; refuse before allocating the decoded buffer.
    if len(payload) // 4 * 3 > max_bytes + 3:
        raise WorkerError(ErrorCode.INVALID_INPUT, f"{field}: larger than the limit of {max_bytes} bytes",
                          {"errors": [{"field": field, "problem": f"decoded size exceeds {max_bytes} bytes"}]})
    try:
        data = base64.b64decode(payload + "=" * (-len(payload) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise WorkerError(ErrorCode.INVALID_INPUT, f"{field}: not valid base64 or a base64 data URI",
                          {"errors": [{"field": field, "problem": "not valid base64 or a base64 data URI"}]}
                          ) from None
    if not data:
        raise WorkerError(ErrorCode.INVALID_INPUT, f"{field}: empty file",
                          {"errors": [{"field": field, "problem": "decodes to zero bytes"}]})
    if len(data) > max_bytes:
        raise WorkerError(ErrorCode.INVALID_INPUT, f"{field}: larger than the limit of {max_bytes} bytes",
                          {"errors": [{"field": field, "problem": f"decoded size {len(data)} exceeds {max_bytes}"}]})
    return data


_MAGIC = [
    (b"\x89PNG\r\n\x1a\n", ".png"), (b"\xff\xd8\xff", ".jpg"), (b"GIF87a", ".gif"), (b"GIF89a", ".gif"),
    (b"BM", ".bmp"), (b"fLaC", ".flac"), (b"OggS", ".ogg"), (b"ID3", ".mp3"), (b"\x1aE\xdf\xa3", ".webm"),
]


def sniff_extension(data: bytes) -> str:
    """A file extension from the content's magic bytes (ComfyUI's loaders pick decoders by content or name)."""
    for magic, ext in _MAGIC:
        if data.startswith(magic):
            return ext
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return ".wav"
    if data[4:8] == b"ftyp":
        return ".mp4"
    return ".bin"


def decode_images(images: list[InputImage], *, max_count: int, max_bytes: int,
                  max_total: int) -> list[tuple[str, bytes]]:
    """Decode every input image, checking count, per-file and total limits and duplicate names."""
    if len(images) > max_count:
        raise WorkerError(ErrorCode.INVALID_INPUT, f"images: at most {max_count} images are accepted",
                          {"errors": [{"field": "images", "problem": f"{len(images)} given, limit {max_count}"}]})
    seen: set[str] = set()
    decoded: list[tuple[str, bytes]] = []
    total = 0
    for i, item in enumerate(images):
        if item.name in seen:
            raise WorkerError(ErrorCode.INVALID_INPUT, f"images[{i}].name: duplicate name '{item.name}'",
                              {"errors": [{"field": f"images[{i}].name", "problem": "duplicate name"}]})
        seen.add(item.name)
        data = decode_base64_media(item.image, field=f"images[{i}].image", max_bytes=max_bytes)
        total += len(data)
        if total > max_total:
            raise WorkerError(ErrorCode.INVALID_INPUT, f"images: all images together exceed {max_total} bytes",
                              {"errors": [{"field": "images", "problem": f"total decoded size exceeds {max_total}"}]})
        decoded.append((item.name, data))
    return decoded


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
