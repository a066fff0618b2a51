"""S3-compatible delivery (AWS S3, Cloudflare R2, Backblaze B2, MinIO, SeaweedFS, ...).

Outputs are uploaded side by side (a thread pool across files) and large ones in parallel parts (boto3's
TransferConfig). Transient failures are retried with backoff; when any output still fails, the objects
already written for this job are deleted and the job fails with UPLOAD_FAILED: a result never claims a
partial delivery. Credentials are kept out of logs, errors and results.
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, ConnectionError as BotoConnectionError
from botocore.exceptions import ReadTimeoutError, ConnectTimeoutError

from ..errors import ErrorCode, WorkerError
from ..media.outputs import ProducedOutput
from ..media.urlsafety import UrlPolicy, UrlRefused, check_endpoint
from ..schema import OutputEntry, StorageConfig
from ..settings import Settings
from .base import DeliveryContext, DeliveryProvider, describe
from .keys import render_keys

log = logging.getLogger(__name__)

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

    def secrets(self) -> list[str]:
        return [s for s in (self.access_key, self.secret_key) if s]


def s3_target(settings: Settings, s3_config: dict[str, Any] | None, storage: StorageConfig | None = None, *,
              require_bucket: bool = True) -> S3Target | None:
    """The S3 target of a job, or None when neither the request nor the environment configures one.

    Precedence: the request's RunPod ``s3Config`` (credentials + endpoint + bucket), then the environment;
    ``output_config.storage.bucket`` overrides the bucket of either. ``require_bucket=False`` serves
    reading ``s3://bucket/key`` inputs, whose bucket is in the URL."""
    storage = storage or StorageConfig()
    if s3_config:
        if not isinstance(s3_config, dict):
            raise _bad("s3Config", "must be an object {accessId, accessSecret, bucketName, endpointUrl}")
        unknown = sorted(set(s3_config) - {"accessId", "accessSecret", "bucketName", "endpointUrl"})
        if unknown:
            raise _bad("s3Config", f"unknown field(s) {unknown}")
        for name in ("accessId", "accessSecret"):
            if not isinstance(s3_config.get(name), str) or not s3_config[name]:
                raise _bad(f"s3Config.{name}", "required, a non-empty string")
        endpoint = s3_config.get("endpointUrl") or None
        if endpoint is not None:
            if not isinstance(endpoint, str):
                raise _bad("s3Config.endpointUrl", "must be a string URL")
            # The request chooses where the worker connects: the same rule as for input URLs.
            try:
                check_endpoint(endpoint, UrlPolicy(allow_private=settings.allow_private_urls,
                                                   allow_http=settings.allow_http_urls))
            except UrlRefused as exc:
                raise _bad("s3Config.endpointUrl", str(exc)) from None
        bucket = storage.bucket or s3_config.get("bucketName") or settings.bucket_name
        if not bucket and require_bucket:
            raise _bad("s3Config.bucketName", "no bucket: set s3Config.bucketName or output_config.storage.bucket")
        return S3Target(bucket=bucket or "", region=storage.region or _region(endpoint, settings),
                        addressing_style=storage.addressing_style or settings.bucket_addressing_style,
                        endpoint_url=endpoint, access_key=s3_config["accessId"],
                        secret_key=s3_config["accessSecret"], from_request=True)
    access = settings.bucket_access_key_id.get_secret_value() if settings.bucket_access_key_id else None
    secret = settings.bucket_secret_access_key.get_secret_value() if settings.bucket_secret_access_key else None
    if not (access and secret) and not settings.bucket_endpoint_url:
        return None
    bucket = storage.bucket or settings.bucket_name
    if not bucket and require_bucket:
        raise _bad("output_config.storage.bucket", "no bucket: set it here or in the environment (BUCKET_NAME)")
    return S3Target(bucket=bucket or "", region=storage.region or _region(settings.bucket_endpoint_url, settings),
                    addressing_style=storage.addressing_style or settings.bucket_addressing_style,
                    endpoint_url=settings.bucket_endpoint_url, access_key=access, secret_key=secret)


def _region(endpoint: str | None, settings: Settings) -> str:
    if settings.bucket_region:
        return settings.bucket_region
    match = _AWS_REGION.search(endpoint or "")
    return match.group(1) if match else "us-east-1"


def _bad(field_name: str, problem: str) -> WorkerError:
    return WorkerError(ErrorCode.INVALID_INPUT, f"{field_name}: {problem}",
                       {"errors": [{"field": field_name, "problem": problem}]})


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
        return _session().client("s3", endpoint_url=target.endpoint_url, region_name=target.region,
                                 aws_access_key_id=target.access_key, aws_secret_access_key=target.secret_key,
                                 config=config)


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
    key = (target.endpoint_url, target.region, target.addressing_style, target.access_key, target.secret_key,
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


@dataclass
class _Upload:
    item: ProducedOutput
    key: str
    index: int


class S3Delivery(DeliveryProvider):
    name = "s3"

    def __init__(self, target: S3Target, settings: Settings, storage: StorageConfig, *,
                 client_factory: Callable[[S3Target, Settings], Any] = client_for,
                 backoff_base: float = 0.5) -> None:
        self.target = target
        self.settings = settings
        self.storage = storage
        self._client_factory = client_factory
        self._backoff_base = backoff_base

    def _keys(self, ctx: DeliveryContext, outputs: list[ProducedOutput]) -> list[str]:
        template = self.storage.key_template or self.settings.bucket_key_template
        field_name = ("output_config.storage.key_template" if self.storage.key_template
                      else "BUCKET_KEY_TEMPLATE")
        prefix = self.storage.path if self.storage.path is not None else self.settings.bucket_path_prefix
        return render_keys(template, prefix, ctx, outputs, field=field_name)

    def deliver(self, ctx: DeliveryContext, outputs: list[ProducedOutput]) -> list[OutputEntry]:
        keys = self._keys(ctx, outputs)
        client = self._client_factory(self.target, self.settings)
        transfer = TransferConfig(multipart_threshold=self.settings.upload_multipart_threshold,
                                  multipart_chunksize=self.settings.upload_part_size,
                                  max_concurrency=self.settings.upload_part_concurrency, use_threads=True)
        uploads = [_Upload(item, key, i) for i, (item, key) in enumerate(zip(outputs, keys)) if item.kind != "text"]
        failures: dict[int, str] = {}
        done: list[_Upload] = []
        entries: dict[int, OutputEntry] = {i: describe(item) for i, item in enumerate(outputs) if item.kind == "text"}
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=self.settings.upload_concurrency,
                                thread_name_prefix=f"s3-{ctx.job_id[:8]}") as pool:
            # Each output is described (sha256, size) and uploaded on the same thread, right before its upload,
            # so hashing overlaps the other uploads and describes exactly the bytes sent.
            futures = {pool.submit(self._describe_and_upload, client, transfer, up): up for up in uploads}
            for future, up in futures.items():
                error = future.exception()
                if error is None:
                    entries[up.index] = future.result()
                    done.append(up)
                else:
                    failures[up.index] = error_reason(error, self.target.secrets())
        if failures:
            self._remove(client, done)
            failed = [{"node_id": outputs[i].node_id, "filename": outputs[i].filename, "reason": reason}
                      for i, reason in sorted(failures.items())]
            raise WorkerError(
                ErrorCode.UPLOAD_FAILED,
                f"{len(failures)} of {len(uploads)} output(s) could not be uploaded to S3 bucket "
                f"'{self.target.bucket}': {failed[0]['reason']}",
                {"provider": "s3", "bucket": self.target.bucket, "failed": failed,
                 "not_delivered": [u.item.filename for u in uploads], "delivered": []})
        log.info("uploaded %d output(s) to bucket %s in %.2f s", len(uploads), self.target.bucket,
                 time.monotonic() - started)
        result: list[OutputEntry] = []
        for i, item in enumerate(outputs):
            entry = entries[i]
            if item.kind != "text":
                url, expires = self._url(client, keys[i])
                entry = entry.model_copy(update={"url": url, "url_expires_at": expires, "storage": "s3",
                                                 "bucket": self.target.bucket, "object_key": keys[i]})
            result.append(entry)
            item.release()
        return result

    def _describe_and_upload(self, client: Any, transfer: TransferConfig, up: _Upload) -> OutputEntry:
        entry = describe(up.item)
        self._upload_one(client, transfer, up)
        return entry

    def _upload_one(self, client: Any, transfer: TransferConfig, up: _Upload) -> None:
        tries = self.settings.upload_retries
        for attempt in range(1, tries + 1):
            try:
                content_type = up.item.mime_type.split(";")[0]
                # Streamed from the output's file: an upload never holds the whole output in memory.
                with up.item.open() as body:
                    if up.item.size() < transfer.multipart_threshold:
                        # One request. upload_fileobj would build a transfer manager (thread pool, futures)
                        # for it, which costs more CPU than the upload of an image; outputs are uploaded in
                        # parallel one level up anyway.
                        client.put_object(Bucket=self.target.bucket, Key=up.key, Body=body,
                                          ContentType=content_type)
                    else:
                        client.upload_fileobj(body, self.target.bucket, up.key,
                                              ExtraArgs={"ContentType": content_type}, Config=transfer)
                return
            except (ClientError, BotoCoreError, ConnectionError, TimeoutError) as exc:
                if attempt == tries or not is_transient(exc):
                    raise
                pause = min(self._backoff_base * 2 ** (attempt - 1), 8.0) * (0.5 + random.random())
                log.warning("upload of %s failed (%s); retry %d/%d in %.1f s", up.key,
                            error_reason(exc, self.target.secrets()), attempt, tries - 1, pause)
                time.sleep(pause)

    def _remove(self, client: Any, done: list[_Upload]) -> None:
        """Best effort: objects of a failed delivery are deleted so nothing half-delivered stays behind."""
        for up in done:
            try:
                client.delete_object(Bucket=self.target.bucket, Key=up.key)
            except (ClientError, BotoCoreError) as exc:
                log.warning("could not remove %s after a failed delivery: %s", up.key,
                            error_reason(exc, self.target.secrets()))

    def _url(self, client: Any, key: str) -> tuple[str, str | None]:
        presign = self.storage.presign
        public = self.settings.bucket_public_url if not self.target.from_request else None
        if presign is None:
            presign = public is None
        if presign:
            expiry = self.storage.url_expiry or self.settings.bucket_url_expiry
            url = client.generate_presigned_url("get_object", Params={"Bucket": self.target.bucket, "Key": key},
                                                ExpiresIn=expiry)
            expires = (datetime.now(timezone.utc) + timedelta(seconds=expiry)).isoformat(timespec="seconds")
            return url, expires
        if public:
            return f"{public.rstrip('/')}/{quote(key)}", None
        endpoint = (self.target.endpoint_url or f"https://s3.{self.target.region}.amazonaws.com").rstrip("/")
        if self.target.addressing_style == "virtual":
            scheme, _, host = endpoint.partition("://")
            return f"{scheme}://{self.target.bucket}.{host}/{quote(key)}", None
        return f"{endpoint}/{self.target.bucket}/{quote(key)}", None
