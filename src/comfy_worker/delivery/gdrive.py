"""Google Drive delivery through the Drive v3 API with a service account.

Each output is sent with a resumable upload (so a large video survives a dropped chunk), into the
configured folder — shared drives included (``supportsAllDrives``) — and optionally shared with anyone who
has the link. The result carries the file id, its Drive page and a direct download link.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import google_auth_httplib2
import httplib2
from google.oauth2 import service_account
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError
from googleapiclient.http import MediaIoBaseUpload

from ..errors import ErrorCode, WorkerError
from ..media.outputs import ProducedOutput
from ..schema import OutputEntry, StorageConfig
from ..settings import Settings
from ..storage.scope import check_drive_scope
from .base import DeliveryContext, DeliveryProvider, describe
from .keys import render_keys

log = logging.getLogger(__name__)

SCOPES = ["https://www.googleapis.com/auth/drive"]
_TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}
_MULTIPART_MAX = 5 * 1024 * 1024


def load_service_account_info(raw: str) -> dict[str, Any]:
    """The service-account key from GDRIVE_CREDENTIALS: JSON text, base64 of it, or a file path."""
    text = raw.strip()
    if not text.startswith("{"):
        if _is_file(text):
            text = Path(text).read_text(encoding="utf-8")
        else:
            try:
                text = base64.b64decode(text, validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError, ValueError):
                raise WorkerError(ErrorCode.UPLOAD_FAILED, "GDRIVE_CREDENTIALS is neither JSON, base64 JSON nor a "
                                  "readable file", {"provider": "gdrive"}) from None
    try:
        info = json.loads(text)
    except json.JSONDecodeError:
        raise WorkerError(ErrorCode.UPLOAD_FAILED, "GDRIVE_CREDENTIALS does not hold valid JSON",
                          {"provider": "gdrive"}) from None
    if not isinstance(info, dict) or info.get("type") != "service_account":
        raise WorkerError(ErrorCode.UPLOAD_FAILED, "GDRIVE_CREDENTIALS is not a service-account key "
                          "(type must be 'service_account')", {"provider": "gdrive"})
    return info


def _is_file(text: str) -> bool:
    try:
        return len(text) < 4096 and Path(text).is_file()
    except (OSError, ValueError):  # a long base64 string is no valid path
        return False


def gdrive_configured(settings: Settings) -> bool:
    return settings.gdrive_credentials is not None


def build_drive(settings: Settings, *, ca_certs: str | None = None) -> Any:
    if settings.gdrive_credentials is None:
        raise WorkerError(ErrorCode.UPLOAD_FAILED, "Google Drive delivery is not configured "
                          "(GDRIVE_CREDENTIALS is unset)", {"provider": "gdrive"})
    info = load_service_account_info(settings.gdrive_credentials.get_secret_value())
    try:
        credentials = service_account.Credentials.from_service_account_info(info, scopes=SCOPES)
    except (ValueError, KeyError) as exc:
        raise WorkerError(ErrorCode.UPLOAD_FAILED, f"GDRIVE_CREDENTIALS is not a usable service-account key "
                          f"({exc.__class__.__name__})", {"provider": "gdrive"}) from None
    base_http = httplib2.Http(timeout=int(settings.upload_timeout), ca_certs=ca_certs)
    # Drive answers an unfinished resumable chunk with 308 "Resume Incomplete", not a redirect.
    base_http.redirect_codes = base_http.redirect_codes - {308}
    http = google_auth_httplib2.AuthorizedHttp(credentials, http=base_http)
    options = {"api_endpoint": settings.gdrive_api_endpoint} if settings.gdrive_api_endpoint else None
    return build("drive", "v3", http=http, static_discovery=True, cache_discovery=False,
                 client_options=options)


class GDriveDelivery(DeliveryProvider):
    name = "gdrive"

    def __init__(self, settings: Settings, storage: StorageConfig, *,
                 service_factory: Callable[[Settings], Any] = build_drive, backoff_base: float = 0.5) -> None:
        self.settings = settings
        self.storage = storage
        self._service_factory = service_factory
        self._backoff_base = backoff_base

    def deliver(self, ctx: DeliveryContext, outputs: list[ProducedOutput]) -> list[OutputEntry]:
        check_drive_scope(self.storage, self.settings)
        template = self.storage.key_template or "{filename}"
        names = [n.replace("/", "_") for n in render_keys(template, "", ctx, outputs,
                                                          field="output_config.storage.key_template")]
        folder = self.storage.folder_id or self.settings.gdrive_folder_id
        share = self.storage.share if self.storage.share is not None else self.settings.gdrive_share_anyone
        try:
            service = self._service_factory(self.settings)
        except WorkerError:
            raise
        except Exception as exc:  # the client library raises many kinds while reading its discovery doc
            raise WorkerError(ErrorCode.UPLOAD_FAILED, f"Google Drive client could not start: "
                              f"{exc.__class__.__name__}", {"provider": "gdrive"}) from None
        entries: list[OutputEntry] = []
        created: list[str] = []
        for item, name in zip(outputs, names):
            entry = describe(item)
            if item.kind == "text":
                entries.append(entry)
                continue
            try:
                meta = self._upload(service, item, name, folder)
                created.append(meta["id"])
                if share:
                    self._with_retries(lambda: service.permissions().create(
                        fileId=meta["id"], body={"type": "anyone", "role": "reader"},
                        supportsAllDrives=True, fields="id").execute(), name)
            except Exception as exc:  # noqa: BLE001 - every failure becomes UPLOAD_FAILED below
                self._remove(service, created)
                reason = _reason(exc)
                raise WorkerError(
                    ErrorCode.UPLOAD_FAILED, f"output {item.filename} could not be uploaded to Google Drive: "
                    f"{reason}",
                    {"provider": "gdrive", "failed": [{"node_id": item.node_id, "filename": item.filename,
                                                       "reason": reason}],
                     "not_delivered": [o.filename for o in outputs if o.kind != "text"], "delivered": []}
                ) from None
            file_id = meta["id"]
            entries.append(entry.model_copy(update={
                "storage": "gdrive", "file_id": file_id,
                "view_url": meta.get("webViewLink") or f"https://drive.google.com/file/d/{file_id}/view",
                "url": meta.get("webContentLink") or f"https://drive.google.com/uc?id={file_id}&export=download",
            }))
            item.release()
        return entries

    def _upload(self, service: Any, item: ProducedOutput, name: str, folder: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {"name": name, "mimeType": item.mime_type.split(";")[0]}
        if folder:
            body["parents"] = [folder]
        # Small files go in one multipart request (Google's advice up to 5 MB); larger ones resumably, chunk
        # by chunk from the output's file, so a dropped connection costs one chunk, not the file, and the
        # output is never all in memory.
        resumable = item.size() > min(_MULTIPART_MAX, self.settings.gdrive_chunk_size)
        with item.open() as stream:
            media = MediaIoBaseUpload(stream, mimetype=body["mimeType"], chunksize=self.settings.gdrive_chunk_size,
                                      resumable=resumable)
            request = service.files().create(body=body, media_body=media, supportsAllDrives=True,
                                             fields="id,name,webViewLink,webContentLink")
            if not resumable:
                return self._with_retries(request.execute, name)  # type: ignore[no-any-return]
            return self._resumable(request, name)

    def _resumable(self, request: Any, name: str) -> dict[str, Any]:
        response = None
        failures = 0
        while response is None:
            try:
                _, response = request.next_chunk()
            except (HttpError, OSError, httplib2.HttpLib2Error) as exc:
                # After a failed chunk the library asks the server how much it kept ("bytes */total") and
                # goes on from there. Its own num_retries would resend an already consumed stream instead.
                failures += 1
                status = exc.resp.status if isinstance(exc, HttpError) else None
                if failures >= self.settings.upload_retries or (status is not None
                                                                 and status not in _TRANSIENT_STATUS):
                    raise
                self._pause(name, _reason(exc), failures)
        return response  # type: ignore[no-any-return]

    def _with_retries(self, call: Callable[[], Any], name: str) -> Any:
        tries = self.settings.upload_retries
        for attempt in range(1, tries + 1):
            try:
                return call()
            except HttpError as exc:
                if attempt == tries or exc.resp.status not in _TRANSIENT_STATUS:
                    raise
                self._pause(name, _reason(exc), attempt)
            except (OSError, httplib2.HttpLib2Error) as exc:
                if attempt == tries:
                    raise
                self._pause(name, _reason(exc), attempt)
        raise AssertionError("unreachable")

    def _pause(self, name: str, reason: str, attempt: int) -> None:
        pause = min(self._backoff_base * 2 ** (attempt - 1), 8.0) * (0.5 + random.random())
        log.warning("Drive upload of %s failed (%s); retry %d/%d in %.1f s", name, reason, attempt,
                    self.settings.upload_retries - 1, pause)
        time.sleep(pause)

    def withdraw(self, entries: list[OutputEntry]) -> None:
        file_ids = [e.file_id for e in entries if e.file_id]
        if file_ids:
            self._remove(self._service_factory(self.settings), file_ids)

    def _remove(self, service: Any, file_ids: list[str]) -> None:
        for file_id in file_ids:
            try:
                service.files().delete(fileId=file_id, supportsAllDrives=True).execute()
            except Exception as exc:  # noqa: BLE001 - best effort clean-up
                log.warning("could not remove Drive file %s after a failed delivery: %s", file_id, _reason(exc))


def _reason(exc: BaseException) -> str:
    if isinstance(exc, HttpError):
        try:
            message = json.loads(exc.content.decode("utf-8"))["error"]["message"]
        except (ValueError, KeyError, TypeError, AttributeError):
            message = exc.resp.reason
        return f"HTTP {exc.resp.status}: {message}"[:300]
    return f"{exc.__class__.__name__}: {exc}"[:300]
