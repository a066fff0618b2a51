"""Re-encoding of still-image outputs (png/jpeg/webp) and removal of the workflow metadata ComfyUI embeds.

ComfyUI's SaveImage writes the whole prompt and workflow into PNG text chunks (``prompt``, ``workflow``),
which can leak a customer's graph to whoever receives the image. Stripping a PNG in its original format is
done chunk by chunk, so the pixels are never decoded and the file stays bit-identical otherwise.
"""

from __future__ import annotations

import io
import logging
import struct
import zlib
from dataclasses import dataclass
from pathlib import PurePosixPath

from PIL import Image, PngImagePlugin

from ..errors import ErrorCode, WorkerError

log = logging.getLogger(__name__)

_PNG_SIG = b"\x89PNG\r\n\x1a\n"
_PNG_TEXT_CHUNKS = {b"tEXt", b"iTXt", b"zTXt"}
_FORMATS = {"png": ("PNG", "image/png", ".png"), "jpeg": ("JPEG", "image/jpeg", ".jpg"),
            "webp": ("WEBP", "image/webp", ".webp")}


@dataclass(frozen=True)
class Encoded:
    data: bytes
    mime: str
    filename: str


def strip_png_text(data: bytes) -> bytes:
    """The PNG without its text chunks (tEXt/iTXt/zTXt); anything that is not a PNG comes back as is."""
    if not data.startswith(_PNG_SIG):
        return data
    out = bytearray(_PNG_SIG)
    pos = len(_PNG_SIG)
    while pos + 12 <= len(data):
        length = struct.unpack(">I", data[pos:pos + 4])[0]
        kind = data[pos + 4:pos + 8]
        end = pos + 12 + length
        if end > len(data):
            return data  # truncated file: do not guess, deliver what ComfyUI wrote
        if kind not in _PNG_TEXT_CHUNKS:
            out += data[pos:end]
        pos = end
        if kind == b"IEND":
            break
    return bytes(out)


def png_text(data: bytes) -> dict[str, str]:
    """The text chunks of a PNG (tEXt and uncompressed/compressed iTXt/zTXt), read without decoding pixels."""
    texts: dict[str, str] = {}
    pos = len(_PNG_SIG)
    while data.startswith(_PNG_SIG) and pos + 12 <= len(data):
        length = struct.unpack(">I", data[pos:pos + 4])[0]
        kind = data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        try:
            if kind == b"tEXt":
                key, _, value = body.partition(b"\0")
                texts[key.decode("latin-1")] = value.decode("latin-1")
            elif kind == b"zTXt":
                key, _, rest = body.partition(b"\0")
                texts[key.decode("latin-1")] = zlib.decompress(rest[1:]).decode("latin-1")
            elif kind == b"iTXt":
                key, _, rest = body.partition(b"\0")
                compressed = rest[0] == 1
                rest = rest[2:].split(b"\0", 2)[2]
                texts[key.decode("latin-1")] = (zlib.decompress(rest) if compressed else rest).decode("utf-8")
        except (zlib.error, IndexError, UnicodeDecodeError):
            pass
        pos += 12 + length
    return texts


def is_animated(data: bytes) -> bool:
    """APNG, animated WEBP or a GIF, from headers alone."""
    if data.startswith(_PNG_SIG):
        idat = data.find(b"IDAT")
        actl = data.find(b"acTL")
        return actl != -1 and (idat == -1 or actl < idat)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return data[12:16] == b"VP8X" and bool(data[20] & 0x02)
    return data[:6] in (b"GIF87a", b"GIF89a")


def reencode(data: bytes, filename: str, *, fmt: str, quality: int, strip_metadata: bool,
             max_pixels: int) -> Encoded:
    """Decode a still image and write it as ``fmt``. Refuses images over ``max_pixels`` before decoding."""
    pil_format, mime, ext = _FORMATS[fmt]
    image = open_image(data, max_pixels=max_pixels, what=f"output {filename}")
    with image:
        image.load()
        kwargs: dict[str, object] = {}
        if pil_format == "JPEG":
            if image.mode in ("RGBA", "LA", "P", "PA"):
                image = _flatten(image)
            elif image.mode not in ("RGB", "L", "CMYK"):
                image = image.convert("RGB")
            kwargs.update(quality=quality, optimize=True)
        elif pil_format == "WEBP":
            if image.mode not in ("RGB", "RGBA"):
                image = image.convert("RGBA" if "A" in image.getbands() or image.mode == "P" else "RGB")
            kwargs.update(quality=quality, method=4)
        else:
            if image.mode not in ("RGB", "RGBA", "L", "LA", "P", "I", "I;16"):
                image = image.convert("RGBA")
            kwargs.update(optimize=False, compress_level=6)
            if not strip_metadata:
                info = PngImagePlugin.PngInfo()
                for key, value in png_text(data).items():
                    info.add_text(key, value)
                kwargs["pnginfo"] = info
        out = io.BytesIO()
        image.save(out, pil_format, **kwargs)
    name = str(PurePosixPath(filename).with_suffix(ext))
    return Encoded(out.getvalue(), mime, name)


def open_image(data: bytes, *, max_pixels: int, what: str) -> Image.Image:
    """Open an image lazily (header only) and refuse it before decoding when it has too many pixels.

    Pillow's own global guard (``Image.MAX_IMAGE_PIXELS``) stays in force as a second line; it is not
    changed here because it is process-wide and jobs may run side by side."""
    is_output = what.startswith("output")
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        image = None
    except (OSError, SyntaxError, ValueError) as exc:
        raise WorkerError(ErrorCode.OUTPUT_MISSING if is_output else ErrorCode.INVALID_INPUT,
                          f"{what} is not a readable image: {exc}", {}) from None
    if image is None or image.width * image.height > max_pixels:
        raise WorkerError(ErrorCode.OUTPUT_TOO_LARGE if is_output else ErrorCode.INVALID_INPUT,
                          f"{what} has more than {max_pixels} pixels (MAX_REENCODE_PIXELS)",
                          {"limit": max_pixels})
    return image


def _flatten(image: Image.Image) -> Image.Image:
    """JPEG has no alpha: composite over white rather than letting transparent pixels turn black."""
    rgba = image.convert("RGBA")
    background = Image.new("RGB", rgba.size, (255, 255, 255))
    background.paste(rgba, mask=rgba.getchannel("A"))
    return background
