"""The one interface every delivery target implements."""

from __future__ import annotations

import base64
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from ..media.outputs import ProducedOutput, image_size
from ..media.probe import probe_stream
from ..schema import OutputEntry

# Images this small are read whole when their header alone does not give the size.
_WHOLE_IMAGE_MAX = 32 * 1024 * 1024


@dataclass
class DeliveryContext:
    """What a provider needs to know about the job whose outputs it delivers."""

    job_id: str
    prompt_id: str
    request: dict[str, Any] = field(default_factory=dict)


def describe(item: ProducedOutput, **extra: Any) -> OutputEntry:
    """The result entry of an output, before the provider adds `data` or `url`.

    Width/height come from image headers (images, animations) or the MP4/MOV track header (video);
    duration from WAV, FLAC and MP4/MOV headers. Nothing is decoded, and a file output is streamed for its
    hash and read only at its header for the rest: describing never loads a whole video."""
    size = item.size()
    width = height = None
    duration = None
    if item.kind in {"image", "animation"}:
        found = image_size(item.head())
        if found is None and size <= _WHOLE_IMAGE_MAX:
            found = image_size(item.content())  # a JPEG whose frame header follows large metadata
        if found:
            width, height = found
    elif item.kind in {"video", "audio"}:
        with item.open() as stream:
            facts = probe_stream(stream, size)
        width, height, duration = facts.width, facts.height, facts.duration
    return OutputEntry(
        node_id=item.node_id, kind=item.kind, key=item.key,  # type: ignore[arg-type]
        filename=item.filename, type=item.ref.type if item.ref else None,  # type: ignore[arg-type]
        mime_type=item.mime_type, size=size, sha256=item.sha256(), width=width, height=height,
        duration=duration, text=item.text, source_filename=item.source_filename, **extra)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class DeliveryProvider(ABC):
    """Takes the outputs of one job and returns their result entries, or raises WorkerError(UPLOAD_FAILED)."""

    name: str

    @abstractmethod
    def deliver(self, ctx: DeliveryContext, outputs: list[ProducedOutput]) -> list[OutputEntry]:
        ...

    def withdraw(self, entries: list[OutputEntry]) -> None:
        """Best effort: remove what `deliver` stored for these entries (outputs delivered while the graph ran
        whose job then failed or was cancelled before anyone was told of them). Nothing to do inline."""
