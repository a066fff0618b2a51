"""Delivery targets for job outputs: one interface, one module per target."""

from .base import DeliveryContext, DeliveryProvider, describe
from .inline import InlineDelivery

__all__ = ["DeliveryContext", "DeliveryProvider", "InlineDelivery", "describe"]
