"""Collect every output of a finished prompt from its history entry, and describe each one.

ComfyUI's history keeps, per output node, the node's UI dict. Any key whose value is a list of file entries
(``{"filename", "subfolder", "type"}``) is a file output: ``images``, ``gifs`` (VideoHelperSuite),
``video``, ``audio``, ``3d``, ``latents`` and whatever custom nodes invent. A ``text`` list of strings is a
text output. Nothing else is dropped silently: unknown shapes become warnings.
"""

from __future__ import annotations

import hashlib
import io
import mimetypes
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from ..comfy.connection import FileRef
from ..errors import ErrorCode, WorkerError

# Keys whose lists hold flags or metadata rather than files.
_NON_OUTPUT_KEYS = {"animated"}

_KIND_BY_KEY = {
    "images": "image",
    "gifs": "animation",
    "video": "video",
    "videos": "video",
    "audio": "audio",
    "3d": "3d",
    "mesh": "3d",
    "latents": "latent",
}

_EXTRA_MIME = {
    ".webp": "image/webp",
    ".webm": "video/webm",
    ".mp4": "video/mp4",
    ".mkv": "video/x-matroska",
    ".mov": "video/quicktime",
    ".flac": "audio/flac",
    ".opus": "audio/opus",
    ".ogg": "audio/ogg",
    ".mp3": "audio/mpeg",
    ".wav": "audio/wav",
    ".glb": "model/gltf-binary",
    ".gltf": "model/gltf+json",
    ".obj": "model/obj",
    ".ply": "application/ply",
    ".latent": "application/octet-stream",
    ".safetensors": "application/octet-stream",
    ".txt": "text/plain",
    ".json": "application/json",
}


def guess_mime(filename: str) -> str:
    suffix = PurePosixPath(filename).suffix.lower()
    if suffix in _EXTRA_MIME:
        return _EXTRA_MIME[suffix]
    guessed, _ = mimetypes.guess_type(filename)
    return guessed or "application/octet-stream"


def kind_for(key: str, filename: str, mime: str) -> str:
    kind = _KIND_BY_KEY.get(key)
    if key == "images" and mime in {"image/gif"}:
        return "animation"
    if kind == "image" and mime.startswith("video/"):
        return "video"
    if kind:
        return kind
    major = mime.split("/", 1)[0]
    if major == "image":
        return "image"
    if major in {"video", "audio"}:
        return major
    if major == "model":
        return "3d"
    return "file"


@dataclass
class ProducedOutput:
    """One output of a prompt: a file or a text.

    A file output is read where it lies (`path`: ComfyUI's own file, or a copy fetched from `/view`) and
    streamed from there: its size, hash and header facts never need the whole file in memory, and storage
    uploads stream it. `content()` loads the bytes only for what needs them (inline base64, re-encoding)."""

    node_id: str
    key: str
    kind: str
    mime_type: str
    ref: FileRef | None = None
    text: str | None = None
    source_filename: str | None = None  # the name ComfyUI wrote, when re-encoding changed it
    path: Path | None = None
    _content: bytes | None = field(default=None, repr=False)
    _locate: Callable[[FileRef], Path] | None = field(default=None, repr=False)
    _sha256: str | None = field(default=None, repr=False)
    _size: int | None = field(default=None, repr=False)  # kept after release(): delivered outputs are still counted

    @property
    def filename(self) -> str | None:
        return self.ref.filename if self.ref else None

    def locate(self) -> Path | None:
        """The file holding this output's bytes (found, or fetched, once); None for texts and in-memory data."""
        if self.path is None and self._content is None and self.text is None:
            assert self.ref is not None and self._locate is not None
            self.path = self._locate(self.ref)
        return self.path

    def size(self) -> int:
        if self._size is None:
            if self._content is not None:
                self._size = len(self._content)
            elif self.text is not None:
                self._size = len(self.text.encode("utf-8"))
            else:
                path = self.locate()
                assert path is not None
                self._size = path.stat().st_size
        return self._size

    def open(self) -> BinaryIO:
        """A binary stream of the bytes, from the file when there is one."""
        path = self.locate() if self._content is None else None
        if path is not None:
            return path.open("rb")
        return io.BytesIO(self.content())

    def head(self, limit: int = 1 << 18) -> bytes:
        """The first `limit` bytes: enough for the size of an image or the start of a media header."""
        if self._content is not None or self.text is not None:
            return self.content()[:limit]
        with self.open() as stream:
            return stream.read(limit)

    def content(self) -> bytes:
        """All the bytes (UTF-8 for text), loaded once; `release()` forgets them."""
        if self._content is None:
            if self.text is not None:
                self._content = self.text.encode("utf-8")
            else:
                path = self.locate()
                assert path is not None
                self._content = path.read_bytes()
        return self._content

    def sha256(self) -> str:
        if self._sha256 is None:
            digest = hashlib.sha256()
            if self._content is not None or self.text is not None:
                digest.update(self.content())
            else:
                with self.open() as stream:
                    for chunk in iter(lambda: stream.read(1 << 20), b""):
                        digest.update(chunk)
            self._sha256 = digest.hexdigest()
        return self._sha256

    def release(self) -> None:
        """Forget loaded bytes once delivered (the last use), so a large job never holds them all."""
        self._content = None


@dataclass
class Collected:
    outputs: list[ProducedOutput]
    warnings: list[str]
    temp_files: list[FileRef] = field(default_factory=list)  # every temp file seen, returned or not
    skipped_temp: int = 0

    def require_readable(self) -> None:
        """OUTPUT_MISSING naming every file ComfyUI reported that cannot be read: a result never leaves one
        out silently."""
        missing = []
        for item in self.outputs:
            if item.ref is None:
                continue
            try:
                item.size()
            except OSError as exc:
                missing.append({"node_id": item.node_id, "filename": item.ref.filename,
                                "subfolder": item.ref.subfolder, "type": item.ref.type, "reason": str(exc)})
        if missing:
            raise WorkerError(ErrorCode.OUTPUT_MISSING,
                              f"{len(missing)} output file(s) reported by ComfyUI could not be read",
                              {"missing": missing})


def _is_file_entry(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("filename"), str) and "type" in value


def collect_outputs(history_outputs: dict[str, Any], *, include_temp: bool,
                    locate: Callable[[FileRef], Path]) -> Collected:
    """Turn a history entry's ``outputs`` into the list of outputs to deliver, in node-id order."""
    outputs: list[ProducedOutput] = []
    warnings: list[str] = []
    skipped_temp = 0
    temp_files: list[FileRef] = []
    seen: set[tuple[str, str, str]] = set()
    for node_id in sorted(history_outputs, key=_node_sort_key):
        ui = history_outputs[node_id]
        if not isinstance(ui, dict):
            warnings.append(f"node {node_id}: output is not an object; ignored")
            continue
        for key, value in ui.items():
            if key in _NON_OUTPUT_KEYS or value is None:
                continue
            if not isinstance(value, list):
                warnings.append(f"node {node_id}: output key '{key}' is not a list; ignored")
                continue
            if key == "text" or (value and all(isinstance(v, str) for v in value)):
                for item in value:
                    if isinstance(item, str):
                        outputs.append(ProducedOutput(node_id=node_id, key=key, kind="text",
                                                      mime_type="text/plain; charset=utf-8", text=item))
                continue
            for item in value:
                if not _is_file_entry(item):
                    warnings.append(f"node {node_id}: an entry of '{key}' is not a file; ignored")
                    continue
                ref = FileRef(filename=item["filename"], subfolder=str(item.get("subfolder") or ""),
                              type=str(item.get("type") or "output"))
                if ref.type == "temp":
                    temp_files.append(ref)
                    if not include_temp:
                        skipped_temp += 1
                        continue
                ident = (ref.type, ref.subfolder, ref.filename)
                if ident in seen:
                    continue
                seen.add(ident)
                mime = guess_mime(ref.filename)
                outputs.append(ProducedOutput(node_id=node_id, key=key, kind=kind_for(key, ref.filename, mime),
                                              mime_type=mime, ref=ref, _locate=locate))
    return Collected(outputs=outputs, warnings=warnings, temp_files=temp_files, skipped_temp=skipped_temp)


def _node_sort_key(node_id: str) -> tuple[int, ...] | tuple[float, str]:
    parts = node_id.replace(".", ":").split(":")
    if all(p.isdigit() for p in parts):
        return tuple(int(p) for p in parts)
    return (float("inf"), node_id)


def image_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from a PNG, GIF, WEBP or JPEG header, without decoding the image."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        return struct.unpack("<HH", data[6:10])
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and len(data) >= 30:
        chunk = data[12:16]
        if chunk == b"VP8X":
            w = int.from_bytes(data[24:27], "little") + 1
            h = int.from_bytes(data[27:30], "little") + 1
            return w, h
        if chunk == b"VP8L" and len(data) >= 25:
            bits = int.from_bytes(data[21:25], "little")
            return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
        if chunk == b"VP8 " and len(data) >= 30:
            w, h = struct.unpack("<HH", data[26:30])
            return w & 0x3FFF, h & 0x3FFF
    if data[:2] == b"\xff\xd8":
        i = 2
        while i + 9 < len(data):
            if data[i] != 0xFF:
                i += 1
                continue
            marker = data[i + 1]
            if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
                h, w = struct.unpack(">HH", data[i + 5:i + 9])
                return w, h
            seg_len = struct.unpack(">H", data[i + 2:i + 4])[0]
            i += 2 + seg_len
    return None
