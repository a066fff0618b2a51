"""S3-compatible delivery (AWS S3, Cloudflare R2, Backblaze B2, MinIO, SeaweedFS, ...).

Outputs are uploaded side by side (a thread pool across files) and large ones in parallel parts (boto3's
TransferConfig). Transient failures are retried with backoff; when any output still fails, the objects
already written for this job are deleted and the job fails with UPLOAD_FAILED: a result never claims a
partial delivery. Credentials are kept out of logs, errors and results.
"""

from __future__ import annotations

import contextvars
import logging
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote

from boto3.s3.transfer import TransferConfig
from botocore.exceptions import BotoCoreError, ClientError

from ..errors import ErrorCode, WorkerError
from ..media.outputs import ProducedOutput
from ..schema import OutputEntry, StorageConfig
from ..settings import Settings
from ..storage.s3 import S3Target, client_for, error_reason, is_transient
from ..storage.scope import check_output_scope, output_prefix
from .base import DeliveryContext, DeliveryProvider, describe
from .keys import render_keys, validate_template

log = logging.getLogger(__name__)


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
        own = self.target.from_request
        validate_template(template, field_name)
        check_output_scope(self.storage, self.settings, own_credentials=own)
        prefix = output_prefix(self.storage, self.settings, own_credentials=own)
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
            # Each in the job's context, so that the uploads' log lines name the job.
            futures = {pool.submit(contextvars.copy_context().run, self._describe_and_upload, client, transfer, up): up
                       for up in uploads}
            for future, up in futures.items():
                error = future.exception()
                if error is None:
                    entries[up.index] = future.result()
                    done.append(up)
                else:
                    failures[up.index] = error_reason(error, self.target.secrets())
        if failures:
            self._remove(client, [up.key for up in done])
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

    def _remove(self, client: Any, keys: list[str]) -> None:
        """Best effort: objects of a failed delivery are deleted so nothing half-delivered stays behind."""
        for key in keys:
            try:
                client.delete_object(Bucket=self.target.bucket, Key=key)
            except (ClientError, BotoCoreError) as exc:
                log.warning("could not remove %s after a failed delivery: %s", key,
                            error_reason(exc, self.target.secrets()))

    def withdraw(self, entries: list[OutputEntry]) -> None:
        keys = [e.object_key for e in entries if e.object_key and e.bucket == self.target.bucket]
        if keys:
            client = self._client_factory(self.target, self.settings)
            self._remove(client, keys)
            log.info("withdrew %d undelivered output(s) from bucket %s", len(keys), self.target.bucket)

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
