"""Small, valid media files written without any codec library (FLAC, MP4 placeholder), and preview JPEGs."""

from __future__ import annotations

import functools
import struct


class _BitWriter:
    def __init__(self) -> None:
        self.out = bytearray()
        self.acc = 0
        self.n = 0

    def write(self, value: int, bits: int) -> None:
        for i in range(bits - 1, -1, -1):
            self.acc = (self.acc << 1) | ((value >> i) & 1)
            self.n += 1
            if self.n == 8:
                self.out.append(self.acc)
                self.acc = 0
                self.n = 0

    def align(self) -> None:
        while self.n:
            self.write(0, 1)


def _crc8(data: bytes) -> int:
    crc = 0
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def _crc16(data: bytes) -> int:
    crc = 0
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x8005) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def _utf8_number(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    return chr(n).encode("utf-8")  # frame numbers stay far below the surrogate range in practice


def flac_bytes(channels: list[list[int]], sample_rate: int, block: int = 4096) -> bytes:
    """A FLAC stream of 16-bit samples stored as VERBATIM subframes (valid, uncompressed)."""
    n_ch = max(1, len(channels))
    total = len(channels[0]) if channels else 0
    frames = bytearray()
    for index, start in enumerate(range(0, max(total, 1), block)):
        size = min(block, total - start) if total else 1
        head = _BitWriter()
        head.write(0xFFF8, 16)
        head.write(0b0111, 4)          # block size: 16-bit (size-1) at the end of the header
        head.write(0b0000, 4)          # sample rate: from STREAMINFO
        head.write(n_ch - 1, 4)
        head.write(0b100, 3)           # 16 bits per sample
        head.write(0, 1)
        header = bytes(head.out) + _utf8_number(index) + struct.pack(">H", size - 1)
        header += bytes([_crc8(header)])
        body = _BitWriter()
        for ch in range(n_ch):
            body.write(0b00000010, 8)  # VERBATIM subframe, no wasted bits
            samples = channels[ch][start:start + size] if total else [0]
            for s in samples:
                body.write(s & 0xFFFF, 16)
        body.align()
        frame = header + bytes(body.out)
        frames += frame + struct.pack(">H", _crc16(frame))
    info = _BitWriter()
    info.write(block if total > block else max(16, min(block, max(total, 16))), 16)
    info.write(block if total > block else max(16, min(block, max(total, 16))), 16)
    info.write(0, 24)
    info.write(0, 24)
    info.write(sample_rate, 20)
    info.write(n_ch - 1, 3)
    info.write(15, 5)
    info.write(total, 36)
    info.write(0, 128)
    streaminfo = bytes(info.out)
    return b"fLaC" + bytes([0x80]) + len(streaminfo).to_bytes(3, "big") + streaminfo + bytes(frames)


def mp4_placeholder(width: int, height: int, frames: int, fps: float) -> bytes:
    """An ISO-BMFF file (ftyp + free + mdat) that file-type sniffers recognise as MP4."""
    ftyp = b"isom" + struct.pack(">I", 512) + b"isomiso2mp41"
    note = f"emulated video {width}x{height} {frames} frames @ {fps} fps".encode()
    boxes = struct.pack(">I", 8 + len(ftyp)) + b"ftyp" + ftyp
    boxes += struct.pack(">I", 8 + len(note)) + b"free" + note
    boxes += struct.pack(">I", 8) + b"mdat"
    return boxes


@functools.lru_cache(maxsize=128)
def preview_jpeg(step: int, steps: int, size: int = 512) -> bytes:
    """A latent preview as ComfyUI sends it: a JPEG of quality 95 scaled to --preview-size (512), here a
    gradient that brightens with the step."""
    import io

    from PIL import Image

    level = int(255 * step / max(1, steps))
    small = Image.linear_gradient("L").resize((16, 16)).point(lambda v: (v + level) // 2)
    image = Image.merge("RGB", (small, small.point(lambda v: 255 - v), small)).resize((size, size))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=95)
    return out.getvalue()
