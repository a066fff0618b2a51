"""The one interface every delivery target implements."""

from __future__ import annotations

import base64
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from ..media.outputs import ProducedOutput, image_size
from ..schema import OutputEntry


@dataclass
class DeliveryContext:
    """What a provider needs to know about the job whose outputs it delivers."""

    job_id: str
    prompt_id: str
    request: dict[str, Any] = field(default_factory=dict)


def describe(item: ProducedOutput, **extra: Any) -> OutputEntry:
    """The result entry of an output, before the provider adds `data` or `url`."""
    content = item.content()
    width = height = None
    if item.kind in {"image", "animation"}:
        size = image_size(content)
        if size:
            width, height = size
    return OutputEntry(
        node_id=item.node_id, kind=item.kind, key=item.key,  # type: ignore[arg-type]
        filename=item.filename, type=item.ref.type if item.ref else None,  # type: ignore[arg-type]
        mime_type=item.mime_type, size=len(content), sha256=item.sha256(), width=width, height=height,
        text=item.text, **extra)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class DeliveryProvider(ABC):
    """Takes the outputs of one job and returns their result entries, or raises WorkerError(UPLOAD_FAILED)."""

    name: str

    @abstractmethod
    def deliver(self, ctx: DeliveryContext, outputs: list[ProducedOutput]) -> list[OutputEntry]:
        ...
