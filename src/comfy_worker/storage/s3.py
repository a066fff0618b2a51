"""S3-compatible storage as the worker reaches it, for inputs (`s3://` URLs) and outputs alike: the target
(bucket, region, addressing style, credentials) from the request's `s3Config` or the operator's
environment, and one client per target kept between jobs. Credentials never appear in a repr, a log line,
an error or a result.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError, ConnectTimeoutError, ReadTimeoutError
from botocore.exceptions import ConnectionError as BotoConnectionError

from ..errors import invalid_input
from ..schema import S3Config, StorageConfig
from ..settings import Settings
from . import urlsafety
from .pinning import pin_client
from .urlsafety import Target, UrlRefused, check_endpoint

_TRANSIENT_CODES = {"SlowDown", "RequestTimeout", "RequestTimeTooSkewed", "InternalError", "ServiceUnavailable",
                    "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequests",
                    "BadDigest", "IncompleteBody"}
_AWS_REGION = re.compile(r"\.s3[.-]([a-z0-9-]+)\.amazonaws\.com")


@dataclass(frozen=True)
class S3Target:
    """Where and as whom to upload. ``repr`` never shows the keys."""

    bucket: str
    region: str
    addressing_style: str
    endpoint_url: str | None = None
    access_key: str | None = field(default=None, repr=False)
    secret_key: str | None = field(default=None, repr=False)
    from_request: bool = False
    # A request's own endpoint: the address it was checked at, the only one its client connects to.
    pin: Target | None = field(default=None, repr=False)

    def secrets(self) -> list[str]:
        return [s for s in (self.access_key, self.secret_key) if s]


def s3_target(settings: Settings, s3_config: S3Config | None, storage: StorageConfig | None = None, *,
              require_bucket: bool = True) -> S3Target | None:
    """The S3 target of a job, or None when neither the request nor the environment configures one.

    Precedence: the request's RunPod ``s3Config`` (credentials + endpoint + bucket), then the environment;
    ``output_config.storage.bucket`` overrides the bucket of either. ``require_bucket=False`` serves
    reading ``s3://bucket/key`` inputs, whose bucket is in the URL."""
    storage = storage or StorageConfig()
    if s3_config is not None:
        endpoint = s3_config.endpointUrl or None
        pin = None
        addressing = storage.addressing_style or settings.bucket_addressing_style
        if endpoint is not None:
            # The request chooses where the worker connects: the same rule as for input URLs, and the client
            # is held to the checked address. Virtual-hosted style would connect to `<bucket>.<host>`, a
            # name nobody checked: a request's endpoint is reached path-style.
            try:
                pin = check_endpoint(endpoint, urlsafety.url_policy(settings))
            except UrlRefused as exc:
                raise invalid_input("s3Config.endpointUrl", str(exc)) from None
            check_request_addressing(storage, s3_config)
            addressing = "path"
        bucket = storage.bucket or s3_config.bucketName or settings.bucket_name
        if not bucket and require_bucket:
            raise invalid_input("s3Config.bucketName", "no bucket: set s3Config.bucketName or "
                                "output_config.storage.bucket")
        return S3Target(bucket=bucket or "", region=storage.region or _region(endpoint, settings),
                        addressing_style=addressing, endpoint_url=endpoint, access_key=s3_config.accessId,
                        secret_key=s3_config.accessSecret, from_request=True, pin=pin)
    access = settings.bucket_access_key_id.get_secret_value() if settings.bucket_access_key_id else None
    secret = settings.bucket_secret_access_key.get_secret_value() if settings.bucket_secret_access_key else None
    if not (access and secret) and not settings.bucket_endpoint_url:
        return None
    bucket = storage.bucket or settings.bucket_name
    if not bucket and require_bucket:
        raise invalid_input("output_config.storage.bucket", "no bucket: set it here or in the environment "
                            "(BUCKET_NAME)")
    return S3Target(bucket=bucket or "", region=storage.region or _region(settings.bucket_endpoint_url, settings),
                    addressing_style=storage.addressing_style or settings.bucket_addressing_style,
                    endpoint_url=settings.bucket_endpoint_url, access_key=access, secret_key=secret)


def check_request_addressing(storage: StorageConfig, s3_config: S3Config | None) -> None:
    """A request's own endpoint is reached path-style: virtual-hosted style connects to `<bucket>.<host>`, a
    name nobody checked."""
    if s3_config is not None and s3_config.endpointUrl and storage.addressing_style == "virtual":
        raise invalid_input("output_config.storage.addressing_style", "'virtual' with a request's endpoint",
                            message="output_config.storage.addressing_style: a request's own endpointUrl is "
                            "reached path-style only (the worker connects to the host it checked, never "
                            "to <bucket>.<host>)")


def _region(endpoint: str | None, settings: Settings) -> str:
    if settings.bucket_region:
        return settings.bucket_region
    match = _AWS_REGION.search(endpoint or "")
    return match.group(1) if match else "us-east-1"


def build_client(target: S3Target, settings: Settings) -> Any:
    """A new S3 client for `target`. Jobs use client_for(), which keeps clients between jobs."""
    config = Config(
        signature_version="s3v4",
        s3={"addressing_style": target.addressing_style},
        # Since boto3 1.36 uploads carry CRC checksums by default, which R2, B2 and older MinIO refuse.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        retries={"max_attempts": 3, "mode": "standard"},
        connect_timeout=min(settings.upload_timeout, 15.0),
        read_timeout=settings.upload_timeout,
        max_pool_connections=settings.upload_concurrency * settings.upload_part_concurrency + 4,
    )
    with _clients_lock:  # a boto3 session is not safe to build clients from on several threads at once
        client = _session().client("s3", endpoint_url=target.endpoint_url, region_name=target.region,
                                   aws_access_key_id=target.access_key, aws_secret_access_key=target.secret_key,
                                   config=config)
    if target.pin is not None:
        pin_client(client, target.pin, timeout=(config.connect_timeout, config.read_timeout),
                   max_pool_connections=config.max_pool_connections)
    return client


# Building an S3 client reads and parses botocore's service model: about 0.1 s of CPU, more than uploading
# a job's images. Clients are thread-safe, so one per target and settings is kept and shared by jobs.
_CLIENTS_KEPT = 8
_clients: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
_clients_lock = threading.RLock()
_boto_session: boto3.session.Session | None = None


def _session() -> boto3.session.Session:
    global _boto_session
    if _boto_session is None:
        _boto_session = boto3.session.Session()
    return _boto_session


def client_for(target: S3Target, settings: Settings) -> Any:
    """The S3 client for `target`, shared with the jobs before and after this one."""
    key = (target.endpoint_url, target.pin, target.region, target.addressing_style, target.access_key,
           target.secret_key,
           settings.upload_timeout, settings.upload_concurrency, settings.upload_part_concurrency)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = _clients[key] = build_client(target, settings)
            while len(_clients) > _CLIENTS_KEPT:
                _clients.popitem(last=False)
        _clients.move_to_end(key)
        return client


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, (BotoConnectionError, ReadTimeoutError, ConnectTimeoutError)):
        return True
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        return code in _TRANSIENT_CODES or status >= 500 or status == 429
    return isinstance(exc, (ConnectionError, TimeoutError))


def error_reason(exc: BaseException, secrets: list[str]) -> str:
    """A short reason for an error, with any credential removed."""
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        text = f"{err.get('Code', 'Error')}: {err.get('Message', '')}".strip()
    else:
        text = f"{exc.__class__.__name__}: {exc}"
    for secret in secrets:
        text = text.replace(secret, "***")
    return text[:300]


