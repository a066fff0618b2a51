"""From collected outputs to the result's `outputs` and `images`: re-encode on request, choose the target
(inline, S3, Google Drive, or `auto`), deliver, and build the compatible `images` list."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

from ..errors import ErrorCode, WorkerError, invalid_input
from ..media.encode import is_animated, reencode, strip_png_text
from ..media.outputs import ProducedOutput
from ..schema import CompatImage, OutputConfig, OutputEntry, S3Config
from ..settings import Settings
from ..storage.s3 import check_request_addressing, s3_target
from ..storage.scope import check_drive_scope, check_output_scope
from .base import DeliveryContext, DeliveryProvider
from .gdrive import GDriveDelivery, gdrive_configured
from .inline import InlineDelivery
from .keys import validate_template
from .s3 import S3Delivery

log = logging.getLogger(__name__)

# JSON around each inline entry (field names, node id, hashes, ...) is well under this.
_ENTRY_OVERHEAD = 512
# Output kinds that the compatible `images` list carries.
_COMPAT_KINDS = {"image", "animation"}


@dataclass
class DeliveryResult:
    entries: list[OutputEntry]
    images: list[CompatImage]
    warnings: list[str] = field(default_factory=list)
    provider: str = "inline"


def check_delivery_options(config: OutputConfig, s3_config: S3Config | None, settings: Settings) -> None:
    """Storage options checked when the job arrives, so a refused key, bucket or folder costs no GPU time."""
    storage = config.storage
    if storage.key_template:
        validate_template(storage.key_template, "output_config.storage.key_template")
    check_output_scope(storage, settings, own_credentials=s3_config is not None)
    check_request_addressing(storage, s3_config)
    if storage.folder_id or storage.share:
        check_drive_scope(storage, settings)


def deliver_outputs(ctx: DeliveryContext, outputs: list[ProducedOutput], config: OutputConfig,
                    s3_config: S3Config | None, settings: Settings) -> DeliveryResult:
    """Deliver a job's outputs as the request and the operator's settings say.

    Raises WorkerError: INVALID_INPUT (bad storage options), OUTPUT_TOO_LARGE (inline result over
    INLINE_MAX_BYTES), UPLOAD_FAILED (storage failed; nothing is reported as delivered)."""
    warnings: list[str] = []
    prepared = prepare_outputs(outputs, config, settings, warnings)
    provider = choose_provider(prepared, config, s3_config, settings, warnings)
    entries, images = share_image_data(provider.deliver(ctx, prepared))
    return DeliveryResult(entries=entries, images=images, warnings=warnings, provider=provider.name)


def prepare_outputs(outputs: list[ProducedOutput], config: OutputConfig, settings: Settings,
                    warnings: list[str]) -> list[ProducedOutput]:
    """Re-encode still images when asked, and strip embedded workflow metadata when that is the choice."""
    fmt = config.format
    strip = config.strip_metadata if config.strip_metadata is not None else fmt != "original"
    quality = config.quality or settings.output_quality
    prepared: list[ProducedOutput] = []
    for item in outputs:
        if item.kind != "image" or item.ref is None:
            prepared.append(item)
            continue
        data = item.content()
        if fmt != "original" and is_animated(data):
            warnings.append(f"output {item.filename} is animated; only still images are re-encoded")
        elif fmt != "original":
            try:
                encoded = reencode(data, item.ref.filename, fmt=fmt, quality=quality, strip_metadata=strip,
                                   max_pixels=settings.max_reencode_pixels)
            except WorkerError as exc:
                warnings.append(f"output {item.filename} of node {item.node_id} was not re-encoded "
                                f"({exc.message}); delivered as written")
            else:
                if not strip and fmt != "png":
                    warnings.append(f"output {item.filename}: metadata is only kept when re-encoding to png")
                prepared.append(_with_content(item, encoded.data, encoded.filename, encoded.mime))
                continue
        if strip and item.mime_type == "image/png":
            prepared.append(_with_content(item, strip_png_text(data), item.ref.filename, item.mime_type))
        else:
            prepared.append(item)
    return prepared


def _with_content(item: ProducedOutput, data: bytes, filename: str, mime: str) -> ProducedOutput:
    assert item.ref is not None
    out = ProducedOutput(node_id=item.node_id, key=item.key, kind=item.kind, mime_type=mime,
                         ref=replace(item.ref, filename=filename), _content=data,
                         source_filename=item.ref.filename if filename != item.ref.filename else None)
    item.release()
    return out


def inline_size(outputs: list[ProducedOutput]) -> int:
    """Bytes the outputs take in the result JSON when returned inline: each file's base64 once (an image's
    in `images`, any other file's in `outputs`), plus the entries around it."""
    total = 0
    for item in outputs:
        n = item.size()
        if item.kind == "text":
            total += n * 2 + _ENTRY_OVERHEAD  # escaped characters can double the size
        else:
            # An image also has an entry in each list; only one of them holds its data.
            entries = 2 if item.kind in _COMPAT_KINDS else 1
            total += 4 * ((n + 2) // 3) + entries * _ENTRY_OVERHEAD
    return total


def _storage_for(config: OutputConfig, s3_config: S3Config | None,
                 settings: Settings) -> DeliveryProvider | None:
    target = s3_target(settings, s3_config, config.storage)
    if target is not None:
        return S3Delivery(target, settings, config.storage)
    if gdrive_configured(settings):
        return GDriveDelivery(settings, config.storage)
    return None


def choose_provider(outputs: list[ProducedOutput], config: OutputConfig, s3_config: S3Config | None,
                    settings: Settings, warnings: list[str], *,
                    chosen: DeliveryProvider | None = None) -> DeliveryProvider:
    """`chosen`: the storage some of these outputs went to already (while the graph ran); used again when
    storage is the choice, so that its endpoint is not looked up again."""
    name = _provider_name(config, settings)
    if chosen is not None and chosen.name == name:
        return chosen
    if name == "s3":
        target = s3_target(settings, s3_config, config.storage)
        if target is None:
            raise invalid_input("output_config.storage.provider", "no S3 storage configured", message="output_config.storage.provider is 's3' but no S3 " "storage is configured (s3Config or BUCKET_* variables)")
        return S3Delivery(target, settings, config.storage)
    if name == "gdrive":
        if not gdrive_configured(settings):
            raise invalid_input("output_config.storage.provider", "Google Drive not configured", message="output_config.storage.provider is 'gdrive' but Google " "Drive is not configured (GDRIVE_CREDENTIALS)")
        return GDriveDelivery(settings, config.storage)
    size = inline_size(outputs)
    limit = settings.inline_max_bytes
    if _fits_inline(name, size, settings):
        return InlineDelivery()
    if name == "auto":
        # A request-level s3Config is an explicit wish for storage, so it wins over Drive.
        storage = chosen or _storage_for(config, s3_config, settings)
        if storage is not None:
            warnings.append(f"outputs take about {size} bytes inline, over {limit} (INLINE_MAX_BYTES); "
                            f"delivered to {storage.name}")
            return storage
        raise _too_large(size, limit, outputs, "no storage is configured")
    raise _too_large(size, limit, outputs, "inline delivery was requested")


def _provider_name(config: OutputConfig, settings: Settings) -> str:
    return config.storage.provider or settings.delivery_provider


def _fits_inline(name: str, size: int, settings: Settings) -> bool:
    return name in {"inline", "auto"} and size <= settings.inline_max_bytes


def _too_large(size: int, limit: int, outputs: list[ProducedOutput], why: str) -> WorkerError:
    return WorkerError(
        ErrorCode.OUTPUT_TOO_LARGE,
        f"the outputs take about {size / 1e6:.1f} MB inline, over the limit of {limit / 1e6:.1f} MB "
        f"(INLINE_MAX_BYTES), and {why}; configure S3 or Google Drive (output_config.storage)",
        {"inline_bytes": size, "limit_bytes": limit,
         "outputs": [{"node_id": o.node_id, "filename": o.filename, "size": o.size()} for o in outputs]})


def share_image_data(entries: list[OutputEntry]) -> tuple[list[OutputEntry], list[CompatImage]]:
    """The `outputs` entries and the compatible `images` list (one per still or animated image, base64 or
    URL, as worker-comfyui's clients read it). An inline image's base64 lives in `images` only, and its
    `outputs` entry says where (`data_in`): every output's bytes travel once."""
    shared: list[OutputEntry] = []
    images: list[CompatImage] = []
    for entry in entries:
        if entry.kind not in _COMPAT_KINDS or entry.filename is None:
            shared.append(entry)
        elif entry.data is not None:
            shared.append(entry.model_copy(update={"data": None, "data_in": f"images[{len(images)}]"}))
            images.append(CompatImage(filename=entry.filename, type="base64", data=entry.data))
        else:
            shared.append(entry)
            if entry.url is not None:
                images.append(CompatImage(filename=entry.filename, type="s3_url", data=entry.url))
    return shared, images
