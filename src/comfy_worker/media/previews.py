"""Latent previews (ComfyUI's preview frames) as small data URIs a caller can show at once."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass

from PIL import Image

from .outputs import image_size

# ComfyUI sends previews of at most 512 px (--preview-size); a frame far beyond that is not a preview.
_MAX_SOURCE_PIXELS = 4096 * 4096
_FORMATS = {"jpeg": ("JPEG", "image/jpeg"), "webp": ("WEBP", "image/webp")}


@dataclass(frozen=True)
class Preview:
    data_uri: str
    width: int
    height: int
    bytes: int


def encode_preview(mime: str, data: bytes, *, fmt: str, max_size: int, quality: int) -> Preview | None:
    """The frame scaled to fit `max_size` (longest side) and encoded as `fmt` (jpeg or webp); the frame's own
    bytes when it is already that format and small enough. None when the frame is not a readable image."""
    size = image_size(data)
    if size is None or size[0] * size[1] > _MAX_SOURCE_PIXELS or size[0] <= 0 or size[1] <= 0:
        return None
    pil_format, out_mime = _FORMATS[fmt]
    if mime == out_mime and max(size) <= max_size:
        return Preview(_uri(out_mime, data), size[0], size[1], len(data))
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.draft("RGB", (max_size, max_size))  # a JPEG decodes at a fraction of its size: cheap
            image = image.convert("RGB")
            image.thumbnail((max_size, max_size))
            buf = io.BytesIO()
            image.save(buf, pil_format, quality=quality)
            width, height = image.size
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    encoded = buf.getvalue()
    return Preview(_uri(out_mime, encoded), width, height, len(encoded))


def _uri(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
