"""What a file is, from its first bytes: MIME type, usual extension and media family.

Input files are typed by their content, never by a name or a Content-Type a sender chose."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sniffed:
    mime: str
    ext: str
    family: str  # image | video | audio


def sniff(data: bytes) -> Sniffed | None:
    head = data[:64]
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return Sniffed("image/png", ".png", "image")
    if head.startswith(b"\xff\xd8\xff"):
        return Sniffed("image/jpeg", ".jpg", "image")
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return Sniffed("image/gif", ".gif", "image")
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return Sniffed("image/webp", ".webp", "image")
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return Sniffed("audio/wav", ".wav", "audio")
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return Sniffed("video/x-msvideo", ".avi", "video")
    if head[:2] == b"BM" and len(data) > 26:
        return Sniffed("image/bmp", ".bmp", "image")
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return Sniffed("image/tiff", ".tiff", "image")
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"avif", b"avis"):
            return Sniffed("image/avif", ".avif", "image")
        if brand in (b"heic", b"heix", b"mif1", b"msf1"):
            return Sniffed("image/heic", ".heic", "image")
        if brand in (b"M4A ", b"M4B "):
            return Sniffed("audio/mp4", ".m4a", "audio")
        if brand == b"qt  ":
            return Sniffed("video/quicktime", ".mov", "video")
        return Sniffed("video/mp4", ".mp4", "video")
    if head[:4] == b"\x1a\x45\xdf\xa3":
        if b"webm" in data[:64]:
            return Sniffed("video/webm", ".webm", "video")
        return Sniffed("video/x-matroska", ".mkv", "video")
    if head[:4] == b"fLaC":
        return Sniffed("audio/flac", ".flac", "audio")
    if head[:4] == b"OggS":
        if b"OpusHead" in data[:80]:
            return Sniffed("audio/opus", ".opus", "audio")
        return Sniffed("audio/ogg", ".ogg", "audio")
    if head[:3] == b"ID3" or (len(head) > 1 and head[0] == 0xFF and (head[1] & 0xE0) == 0xE0):
        return Sniffed("audio/mpeg", ".mp3", "audio")
    return None
