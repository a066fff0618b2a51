"""Input media from anywhere: base64, data URIs, https:// URLs and s3://bucket/key, typed by content.

A value is turned into bytes plus the MIME type and extension its first bytes show. Image and mask slots
only take images; video and audio slots take their family (video slots also animated images). Every
source has a size limit and a time limit; URLs are fetched SSRF-safe (see ``urlsafety``).
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote, urlsplit

from botocore.exceptions import BotoCoreError, ClientError

from ..errors import ErrorCode, WorkerError, invalid_input
from ..settings import Settings
from ..storage.s3 import S3Target, client_for, error_reason
from ..storage.scope import check_input_scope
from ..storage import urlsafety
from ..storage.urlsafety import TooLarge, UrlPolicy, UrlRefused, display_url, fetch_url
from .sniff import sniff

log = logging.getLogger(__name__)

Slot = Literal["image", "mask", "video", "audio", "any"]
_DATA_URI = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w-]+=[^;,]*)*)(?P<b64>;base64)?,",
                       re.IGNORECASE)
_B64_JUNK = re.compile(r"\s+")
_ACCEPTED = {"image": {"image"}, "mask": {"image"}, "video": {"video", "image"}, "audio": {"audio"},
             "any": {"image", "video", "audio"}}


@dataclass(frozen=True)
class ResolvedMedia:
    data: bytes
    mime: str
    ext: str
    source: str  # base64 | data_uri | url | s3


def resolve_input(value: str, *, field: str, settings: Settings, s3_defaults: S3Target | None = None,
                  slot: Slot = "image", max_bytes: int | None = None,
                  policy: UrlPolicy | None = None) -> ResolvedMedia:
    """Turn one media value into bytes.

    ``s3_defaults`` is an :class:`~comfy_worker.storage.s3.S3Target` (or None) whose credentials read
    ``s3://`` inputs: ``s3_target(settings, job.get("s3Config"), require_bucket=False)``. ``max_bytes``
    lowers the per-slot limit (for example to what is left of a job's total
    input budget). ``policy`` replaces the URL policy built from settings (tests).

    Raises WorkerError INVALID_INPUT (bad base64, wrong or unknown type, too large) or INPUT_FETCH_FAILED
    (a URL or object that could not be fetched), always naming ``field``."""
    if not isinstance(value, str) or not value.strip():
        raise _invalid(field, "must be a non-empty string (base64, data URI, https:// or s3:// URL)")
    limit = settings.max_input_image_bytes if slot in {"image", "mask"} else settings.max_input_media_bytes
    if max_bytes is not None:
        limit = min(limit, max_bytes)
    text = value.strip()
    lowered = text[:8].lower()
    if lowered.startswith("data:"):
        data, source = _from_data_uri(text, field, limit), "data_uri"
    elif lowered.startswith(("https://", "http://")):
        data, source = _from_url(text, field, settings, limit, policy), "url"
    elif lowered.startswith("s3://"):
        data, source = _from_s3(text, field, settings, s3_defaults, limit), "s3"
    elif re.match(r"^[a-z][a-z0-9+.-]*://", lowered):
        raise _invalid(field, f"unsupported URL scheme '{text.split(':', 1)[0]}' (use https:// or s3://)")
    else:
        data, source = _decode_b64(text, field, limit), "base64"
    kind = sniff(data)
    if kind is None or kind.family not in _ACCEPTED[slot]:
        what = "an unknown file type" if kind is None else f"{kind.mime}"
        raise _invalid(field, f"is {what}; a {slot} input must be "
                              f"{' or '.join(sorted(_ACCEPTED[slot]))}")
    return ResolvedMedia(data=data, mime=kind.mime, ext=kind.ext, source=source)


def _invalid(field: str, problem: str) -> WorkerError:
    return invalid_input(field, problem, message=f"{field}: {problem}")


def _fetch_failed(field: str, where: str, reason: str) -> WorkerError:
    return WorkerError(ErrorCode.INPUT_FETCH_FAILED, f"{field}: could not fetch {where}: {reason}",
                       {"field": field, "url": where, "reason": reason})


def _decode_b64(text: str, field: str, limit: int) -> bytes:
    compact = _B64_JUNK.sub("", text)
    # Refuse before decoding: the decoded size is 3/4 of the text.
    if len(compact) * 3 // 4 > limit + 3:
        raise _invalid(field, f"is about {len(compact) * 3 // 4} bytes, over the limit of {limit}")
    if "-" in compact or "_" in compact:
        compact = compact.replace("-", "+").replace("_", "/")
    compact += "=" * (-len(compact) % 4)
    try:
        data = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise _invalid(field, "is not valid base64 (nor a data URI, https:// or s3:// URL)") from None
    if not data:
        raise _invalid(field, "decodes to no bytes")
    if len(data) > limit:
        raise _invalid(field, f"is {len(data)} bytes, over the limit of {limit}")
    return data


def _from_data_uri(text: str, field: str, limit: int) -> bytes:
    match = _DATA_URI.match(text)
    if not match:
        raise _invalid(field, "is not a valid data URI (data:<type>;base64,<data>)")
    payload = text[match.end():]
    if match.group("b64"):
        return _decode_b64(payload, field, limit)
    data = unquote(payload).encode("latin-1", errors="replace")
    if len(data) > limit:
        raise _invalid(field, f"is {len(data)} bytes, over the limit of {limit}")
    return data


def _from_url(url: str, field: str, settings: Settings, limit: int, policy: UrlPolicy | None) -> bytes:
    policy = policy or urlsafety.url_policy(settings)
    shown = display_url(url)
    try:
        fetched = fetch_url(url, policy, max_bytes=limit, timeout=settings.input_fetch_timeout,
                            max_redirects=settings.input_max_redirects)
    except TooLarge as exc:
        raise invalid_input(field, f"too large: {exc}", message=f"{field}: {shown} is too large: {exc}",
                            url=shown) from None
    except UrlRefused as exc:
        raise _fetch_failed(field, shown, str(exc)) from None
    log.info("fetched %s for %s (%d bytes, %d redirect(s))", shown, field, len(fetched.data),
             len(fetched.redirects))
    return fetched.data


def _from_s3(url: str, field: str, settings: Settings, target: S3Target | None, limit: int) -> bytes:
    parts = urlsplit(url)
    bucket, key = parts.netloc, unquote(parts.path.lstrip("/"))
    if not bucket or not key:
        raise _invalid(field, "an s3:// URL needs a bucket and a key (s3://bucket/path/to/file)")
    if target is None:
        raise _fetch_failed(field, f"s3://{bucket}/{key}", "no S3 credentials are configured "
                                                           "(BUCKET_* variables or s3Config)")
    check_input_scope(bucket, key, settings, field, own_credentials=target.from_request)
    client = client_for(target, settings)
    try:
        head = client.head_object(Bucket=bucket, Key=key)
        if int(head.get("ContentLength") or 0) > limit:
            raise invalid_input(field, "too large", message=f"{field}: s3://{bucket}/{key} is {head['ContentLength']} " f"bytes, over the limit of {limit}")
        body = client.get_object(Bucket=bucket, Key=key)["Body"]
        data = body.read(limit + 1)
        body.close()
    except ClientError as exc:
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        # Missing and forbidden read the same: an answer must not tell which objects or buckets exist.
        reason = ("it does not exist or cannot be read with these credentials" if status in {301, 400, 403, 404}
                  else error_reason(exc, target.secrets()))
        raise _fetch_failed(field, f"s3://{bucket}/{key}", reason) from None
    except BotoCoreError as exc:
        raise _fetch_failed(field, f"s3://{bucket}/{key}", error_reason(exc, target.secrets())) from None
    if len(data) > limit:
        raise _invalid(field, f"is more than {limit} bytes")
    return data

