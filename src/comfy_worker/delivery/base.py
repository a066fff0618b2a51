"""The one interface every delivery target implements."""

from __future__ import annotations

import base64
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from ..media.outputs import ProducedOutput, image_size
from ..media.probe import probe
from ..schema import OutputEntry


@dataclass
class DeliveryContext:
    """What a provider needs to know about the job whose outputs it delivers."""

    job_id: str
    prompt_id: str
    request: dict[str, Any] = field(default_factory=dict)


def describe(item: ProducedOutput, **extra: Any) -> OutputEntry:
    """The result entry of an output, before the provider adds `data` or `url`.

    Width/height come from image headers (images, animations) or the MP4/MOV track header (video);
    duration from WAV, FLAC and MP4/MOV headers. Nothing is decoded."""
    content = item.content()
    width = height = None
    duration = None
    if item.kind in {"image", "animation"}:
        size = image_size(content)
        if size:
            width, height = size
    elif item.kind in {"video", "audio"}:
        facts = probe(content)
        width, height, duration = facts.width, facts.height, facts.duration
    return OutputEntry(
        node_id=item.node_id, kind=item.kind, key=item.key,  # type: ignore[arg-type]
        filename=item.filename, type=item.ref.type if item.ref else None,  # type: ignore[arg-type]
        mime_type=item.mime_type, size=len(content), sha256=item.sha256(), width=width, height=height,
        duration=duration, text=item.text, source_filename=item.source_filename, **extra)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class DeliveryProvider(ABC):
    """Takes the outputs of one job and returns their result entries, or raises WorkerError(UPLOAD_FAILED)."""

    name: str

    @abstractmethod
    def deliver(self, ctx: DeliveryContext, outputs: list[ProducedOutput]) -> list[OutputEntry]:
        ...
