"""Cheap facts about media files read from their headers: duration of WAV, FLAC and MP4/MOV, frame size
of MP4/MOV. Nothing here decodes media; a header that does not parse gives ``None``, never an error."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO


@dataclass(frozen=True)
class MediaFacts:
    duration: float | None = None
    width: int | None = None
    height: int | None = None


# An MP4's moov box (track tables) is small next to the media; larger ones are not read for a header fact.
_MAX_MOOV = 64 * 1024 * 1024


def probe_stream(stream: BinaryIO, size: int) -> MediaFacts:
    """The same facts from a file, reading only its header (and, for MP4/MOV, its moov box): a video of
    gigabytes is never loaded for them."""
    head = stream.read(1 << 16)
    if head[4:8] != b"ftyp":
        return probe(head, total_size=size)
    pos = 0
    while pos + 8 <= size:
        stream.seek(pos)
        header = stream.read(16)
        if len(header) < 8:
            break
        box_size, box = struct.unpack(">I4s", header[:8])
        header_len = 8
        if box_size == 1 and len(header) == 16:
            box_size, header_len = struct.unpack(">Q", header[8:16])[0], 16
        elif box_size == 0:
            box_size = size - pos
        if box_size < header_len:
            break
        if box == b"moov":
            if box_size > _MAX_MOOV:
                break
            stream.seek(pos)
            return probe(stream.read(box_size))
        pos += box_size
    return MediaFacts()


def probe(data: bytes, *, total_size: int | None = None) -> MediaFacts:
    """Facts from the bytes given: a whole file, its head (`total_size` is then the file's size), or an MP4
    moov box."""
    try:
        if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
            return MediaFacts(duration=_wav_duration(data, total_size or len(data)))
        if data[4:8] == b"moov":
            return _mp4_facts(data)
        if data[:4] == b"fLaC":
            return MediaFacts(duration=_flac_duration(data))
        if data[4:8] == b"ftyp":
            return _mp4_facts(data)
    except (struct.error, IndexError, ValueError, ZeroDivisionError):
        pass
    return MediaFacts()


def _wav_duration(data: bytes, total_size: int) -> float | None:
    pos = 12
    byte_rate = None
    while pos + 8 <= len(data):
        chunk_id = data[pos:pos + 4]
        size = struct.unpack("<I", data[pos + 4:pos + 8])[0]
        if chunk_id == b"fmt ":
            byte_rate = struct.unpack("<I", data[pos + 16:pos + 20])[0]
        elif chunk_id == b"data":
            # Streamed WAVs (ComfyUI's audio nodes via torchaudio can write these) carry 0xFFFFFFFF.
            if size in (0, 0xFFFFFFFF):
                size = total_size - pos - 8
            return round(size / byte_rate, 3) if byte_rate else None
        pos += 8 + size + (size & 1)
    return None


def _flac_duration(data: bytes) -> float | None:
    # STREAMINFO is always the first metadata block: 20-bit rate, 36-bit total samples at fixed offsets.
    info = data[8:8 + 34]
    rate = (info[10] << 12) | (info[11] << 4) | (info[12] >> 4)
    total = ((info[13] & 0x0F) << 32) | struct.unpack(">I", info[14:18])[0]
    if not rate or not total:
        return None
    return round(total / rate, 3)


_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts"}


def _mp4_facts(data: bytes) -> MediaFacts:
    duration = None
    width = height = None
    for box, start, end in _boxes(data, 0, len(data)):
        if box == b"mvhd":
            version = data[start]
            if version == 1:
                timescale, length = struct.unpack(">IQ", data[start + 20:start + 32])
            else:
                timescale, length = struct.unpack(">II", data[start + 12:start + 20])
            if timescale:
                duration = round(length / timescale, 3)
        elif box == b"tkhd" and width is None:
            # Width and height are 16.16 fixed point, the last 8 bytes of the box; audio tracks give 0.
            w, h = struct.unpack(">II", data[end - 8:end])
            if w and h:
                width, height = w >> 16, h >> 16
    return MediaFacts(duration=duration, width=width, height=height)


def _boxes(data: bytes, start: int, end: int, depth: int = 0):  # type: ignore[no-untyped-def]
    pos = start
    while pos + 8 <= end:
        size, box = struct.unpack(">I4s", data[pos:pos + 8])
        header = 8
        if size == 1:
            size = struct.unpack(">Q", data[pos + 8:pos + 16])[0]
            header = 16
        elif size == 0:
            size = end - pos
        if size < header:
            return
        yield box, pos + header, min(pos + size, end)
        if box in _CONTAINERS and depth < 6:
            yield from _boxes(data, pos + header, min(pos + size, end), depth + 1)
        pos += size
