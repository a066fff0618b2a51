"""Delivery targets for job outputs: one interface, one module per target, and the router that picks one."""

from .base import DeliveryContext, DeliveryProvider, describe
from .gdrive import GDriveDelivery
from .inline import InlineDelivery
from .router import (DeliveryResult, check_delivery_options, deliver_outputs, inline_size,
                     share_image_data)
from .s3 import S3Delivery

__all__ = ["DeliveryContext", "DeliveryProvider", "DeliveryResult", "GDriveDelivery", "InlineDelivery",
           "S3Delivery", "check_delivery_options", "deliver_outputs", "describe", "inline_size",
           "share_image_data"]
