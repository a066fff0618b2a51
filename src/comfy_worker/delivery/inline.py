"""Inline delivery: every output base64-encoded inside the job result."""

from __future__ import annotations

from ..media.outputs import ProducedOutput
from ..schema import OutputEntry
from .base import DeliveryContext, DeliveryProvider, b64, describe


class InlineDelivery(DeliveryProvider):
    name = "inline"

    def deliver(self, ctx: DeliveryContext, outputs: list[ProducedOutput]) -> list[OutputEntry]:
        entries = []
        for item in outputs:
            if item.kind == "text":
                entries.append(describe(item))
            else:
                entries.append(describe(item, data=b64(item.content())))
            item.release()
        return entries
