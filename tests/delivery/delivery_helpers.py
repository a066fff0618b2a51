"""Small builders shared by the delivery tests."""

from __future__ import annotations

import io
import struct
import wave

from PIL import Image, PngImagePlugin

from comfy_worker.delivery.base import DeliveryContext
from comfy_worker.media.outputs import FileRef, ProducedOutput, guess_mime, kind_for


def output(filename: str, data: bytes, *, node_id: str = "9", key: str = "images") -> ProducedOutput:
    mime = guess_mime(filename)
    return ProducedOutput(node_id=node_id, key=key, kind=kind_for(key, filename, mime), mime_type=mime,
                          ref=FileRef(filename=filename, subfolder="", type="output"), _content=data)


def text_output(text: str, node_id: str = "12") -> ProducedOutput:
    return ProducedOutput(node_id=node_id, key="text", kind="text", mime_type="text/plain; charset=utf-8",
                          text=text)


def png(width: int = 8, height: int = 6, *, workflow: str | None = None, mode: str = "RGB") -> bytes:
    image = Image.new(mode, (width, height), (200, 30, 40) if mode == "RGB" else (200, 30, 40, 128))
    info = None
    if workflow is not None:
        info = PngImagePlugin.PngInfo()
        info.add_text("prompt", workflow)
        info.add_text("workflow", workflow)
    buf = io.BytesIO()
    image.save(buf, "PNG", pnginfo=info)
    return buf.getvalue()


def wav(seconds: float, rate: int = 8000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\0\0" * int(seconds * rate))
    return buf.getvalue()


def box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


def mp4(duration_s: float, width: int, height: int, timescale: int = 1000) -> bytes:
    """A minimal MP4 header (ftyp + moov/mvhd + trak/tkhd), enough for header probing."""
    mvhd = bytes(4) + bytes(8) + struct.pack(">II", timescale, int(duration_s * timescale)) + bytes(80)
    tkhd = bytes(4) + bytes(8) + struct.pack(">I", 1) + bytes(4) + struct.pack(">I", 0) + bytes(52) + \
        struct.pack(">II", width << 16, height << 16)
    return box(b"ftyp", b"isom" + bytes(4) + b"isomiso2mp41") + \
        box(b"moov", box(b"mvhd", mvhd) + box(b"trak", box(b"tkhd", tkhd))) + box(b"mdat", b"\0" * 64)


def ctx(job_id: str = "job-123", prompt_id: str = "prompt-abc") -> DeliveryContext:
    return DeliveryContext(job_id=job_id, prompt_id=prompt_id)
