"""Model files a request names by URL: refused before any byte moves when the operator does not allow them (host,
format, bucket scope), fetched once into the model cache (resumable, size-capped, verified: the request's sha256,
else the hash Hugging Face publishes, and the format's header), and held for the job until its files are cleaned
up, so that no eviction removes a file a running job uses.

Every job and every worker that wants the same file waits for one download: a lock per file in the cache (on the
network volume when there is one) lets one of them fetch it while the others wait, then find it verified.
"""

from __future__ import annotations

import contextvars
import dataclasses
import hashlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

from botocore.exceptions import BotoCoreError, ClientError
from requests.structures import CaseInsensitiveDict

from ..errors import ErrorCode, WorkerError, invalid_input
from ..schema import S3Config, parse_s3_config
from ..settings import Settings
from ..storage import urlsafety
from ..storage.s3 import client_for, error_reason, s3_target
from ..storage.scope import check_input_scope
from .cache import CACHE_FOLDERS, CachedFile, Lease, ModelCache
from .download import (
    DownloadOptions,
    FetchFailed,
    FetchHooks,
    Opened,
    PinnedTransport,
    Response,
    TransientFetchError,
    Transport,
    fetch_entry,
    options_from_settings,
    redact_url,
    scrub_reason,
    token_for,
)
from .manifest import LEGACY_FOLDER_ALIASES

log = logging.getLogger("comfy_worker.models.requested")

SAFE_EXTENSIONS = (".safetensors", ".sft", ".gguf")
PICKLE_EXTENSIONS = (".ckpt", ".pt", ".pt2", ".pth", ".bin", ".pkl")
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._\- ()+,=@\[\]]")
_DISPOSITION = re.compile(r"filename\*\s*=\s*[\w-]+'[^']*'([^;]+)|filename\s*=\s*\"?([^\";]+)\"?", re.IGNORECASE)
Sender = Callable[[dict[str, Any]], None]


class Requested(Protocol):
    """A model file the request names (workflow.model_urls.UrlModelRef)."""

    field: str
    url: str
    folder: str
    filename: str | None
    sha256: str | None


@dataclass(frozen=True)
class UrlModel:
    """The file as the cache and the downloader see it: `<cache>/<folder>/<key>/<filename>`."""

    url: str
    folder: str
    key: str
    filename: str
    sha256: str | None = None
    size: int | None = None
    token_env: str | None = None

    @property
    def label(self) -> str:
        return f"{self.folder}/{self.filename}"

    @property
    def name(self) -> str:
        """The value a loader input gets: the file's path inside the cache's model folder."""
        return f"{self.key}/{self.filename}"

    def path_under(self, models_root: Path) -> Path:
        return models_root / self.folder / self.key / Path(*PurePosixPath(self.filename).parts)


@dataclass
class Fetched:
    """What became of one requested file."""

    ref: Requested
    name: str | None
    size: int | None
    cached: bool
    fetched_bytes: int = 0
    seconds: float = 0.0

    def plan(self) -> dict[str, Any]:
        """The dry run's report of it (schema.ModelPlan)."""
        return {"field": self.ref.field, "url": redact_url(self.ref.url), "folder": self.ref.folder,
                "name": self.name, "cached": self.cached, "size": self.size}


class Refused(Exception):
    """A file this worker will not fetch, known before any byte moves."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class UrlRules:
    """The operator's rules for model URLs (MODEL_URL_*)."""

    hosts: tuple[str, ...]
    tokens: dict[str, str]
    allow_pickle: bool
    max_bytes: int
    max_files: int

    @classmethod
    def from_settings(cls, settings: Settings) -> UrlRules:
        hosts = tuple(h.strip().lower().rstrip(".") for h in settings.model_url_hosts.split(",") if h.strip())
        tokens = {}
        for pair in settings.model_url_tokens.split(","):
            host, _, variable = pair.partition("=")
            if host.strip() and variable.strip():
                tokens[host.strip().lower()] = variable.strip()
        return cls(hosts, tokens, settings.model_url_allow_pickle, settings.model_url_max_bytes,
                   settings.model_url_max_files)

    def allows(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        return any(host == h or (h.startswith("*.") and host.endswith(h[1:])) for h in self.hosts)

    def token_env(self, host: str, environ: Mapping[str, str]) -> str | None:
        """The variable whose token goes to this exact host, when it is set."""
        variable = self.tokens.get(host.lower().rstrip("."))
        return variable if variable and environ.get(variable, "").strip() else None

    def check_format(self, filename: str) -> None:
        ext = os.path.splitext(filename)[1].lower()
        if ext in SAFE_EXTENSIONS:
            return
        if ext in PICKLE_EXTENSIONS:
            if self.allow_pickle:
                return
            raise Refused("refused_format", f"{filename}: a pickled model file ({ext}) can run code when it is "
                          "loaded; this worker fetches only .safetensors, .sft and .gguf (MODEL_URL_ALLOW_PICKLE)")
        raise Refused("refused_format", f"{filename}: {ext or 'no extension'} is not a model format this worker "
                      "fetches (.safetensors, .sft, .gguf)")


class JobModels:
    """The model files one job names by URL: fetched (or found) in `prepare`, held until the job's cleanup."""

    def __init__(self, job: Mapping[str, Any] | None = None, send_progress: Sender | None = None) -> None:
        self._raw_s3 = (job or {}).get("s3Config")
        self.send_progress = send_progress
        self.leases: list[Lease] = []
        self._lock = threading.Lock()

    @property
    def s3_config(self) -> S3Config | None:
        return parse_s3_config(self._raw_s3)  # already checked when the job was parsed

    def fetch(self, refs: Sequence[Requested], settings: Settings, *, dry_run: bool = False) -> list[Fetched]:
        """Each file in the cache (a dry run: looked up, or asked its size), in the order of `refs`; every file
        that could not be had is named in one MODEL_FETCH_FAILED."""
        if not refs:
            return []
        context = _Context.of(self, settings, len(refs))
        _check_refs(refs, context.rules)
        step = _plan_one if dry_run else _fetch_one
        with ThreadPoolExecutor(max_workers=max(1, min(settings.model_download_workers, len(refs))),
                                thread_name_prefix="model-url") as pool:
            futures = [pool.submit(contextvars.copy_context().run, _guarded, step, ref, index, context)
                       for index, ref in enumerate(refs)]
            outcomes = [future.result() for future in futures]
        failures = [outcome for outcome in outcomes if isinstance(outcome, dict)]
        if failures:
            raise fetch_error(failures)
        return [outcome for outcome in outcomes if isinstance(outcome, Fetched)]

    def hold(self, lease: Lease) -> None:
        with self._lock:
            self.leases.append(lease)

    def release(self) -> None:
        """The job is over: its files may be evicted again."""
        with self._lock:
            leases, self.leases = self.leases, []
        for lease in leases:
            lease.release()


@dataclass
class _Context:
    job: JobModels
    settings: Settings
    rules: UrlRules
    cache: ModelCache
    options: DownloadOptions
    environ: Mapping[str, str]
    progress: _FetchProgress

    @classmethod
    def of(cls, job: JobModels, settings: Settings, count: int) -> _Context:
        cache = ModelCache.from_settings(settings)
        rules = UrlRules.from_settings(settings)
        cap = min(rules.max_bytes, cache.max_bytes or rules.max_bytes)
        options = dataclasses.replace(options_from_settings(settings), max_bytes=cap)
        return cls(job, settings, rules, cache, options, os.environ, _FetchProgress(job.send_progress, count))


def _check_refs(refs: Sequence[Requested], rules: UrlRules) -> None:
    if len(refs) > rules.max_files:
        raise invalid_input("models", f"{len(refs)} model files named by URL, limit {rules.max_files}",
                            message=f"the job names {len(refs)} model files by URL; this worker fetches at most "
                            f"{rules.max_files} per job (MODEL_URL_MAX_FILES)")
    for ref in refs:
        ref.folder = LEGACY_FOLDER_ALIASES.get(ref.folder, ref.folder)
        if ref.folder not in CACHE_FOLDERS:
            field = f"{ref.field}.folder" if ref.field.startswith("models[") else ref.field
            raise invalid_input(field, f"model folder {ref.folder!r} cannot be fetched into; one of "
                                f"{', '.join(CACHE_FOLDERS)}")


def _guarded(step: Callable[[Requested, int, _Context], Fetched], ref: Requested, index: int,
             context: _Context) -> Fetched | dict[str, Any]:
    """The step's result, or the failure's details (schema.ModelFetchFailure)."""
    try:
        return step(ref, index, context)
    except Refused as exc:
        kind, message, status, retryable = exc.kind, str(exc), None, False
    except FetchFailed as exc:
        kind, message, status, retryable = exc.kind, str(exc), exc.status, exc.retryable
    except TransientFetchError as exc:
        kind, message, status, retryable = "connection", str(exc), None, True
    except OSError as exc:  # the cache's disk (full, read-only): another worker may have room
        kind, message, status, retryable = "download", f"cannot write to the model cache: {exc}", None, True
    message = scrub_reason(message, _probe_entry(ref, "", None), context.environ)
    log.error("model %s (%s) not fetched: %s", ref.field, redact_url(ref.url), message)
    failure = {"field": ref.field, "url": redact_url(ref.url), "folder": ref.folder, "reason": kind,
               "message": message, "retryable": retryable}
    return {**failure, "status": status} if status is not None else failure


def fetch_error(failures: list[dict[str, Any]]) -> WorkerError:
    shown = "; ".join(f"{f['field']}: {f['message']}" for f in failures[:5])
    return WorkerError(ErrorCode.MODEL_FETCH_FAILED, f"{len(failures)} model file(s) could not be fetched: {shown}",
                       {"failures": failures}, retryable=all(f["retryable"] for f in failures))


# --- one file ----------------------------------------------------------------------------------------------


def _fetch_one(ref: Requested, index: int, context: _Context) -> Fetched:
    started = time.monotonic()
    transport, token_env, identity = _source(ref, context)
    if ref.filename:
        context.rules.check_format(ref.filename)
    key = cache_key(identity, ref.sha256)
    cache = context.cache
    context.job.hold(cache.lease(ref.folder, key))  # before the lookup: no eviction can come between
    with cache.key_lock(ref.folder, key):
        found = cache.lookup(ref.folder, key, ref.sha256)
        if found is not None:
            cache.touch(found)
            context.progress.finish(index, found.size)
            log.info("model %s: in the cache as %s/%s", ref.field, found.folder, _name_of(found))
            return Fetched(ref, _name_of(found), found.size, True, 0, time.monotonic() - started)
        model = _model(ref, key, transport, token_env, context)
        if model.size is not None:
            cache.make_room(model.size, keep=(ref.folder, key))
        hooks = FetchHooks(transport=transport, on_bytes=context.progress.reporter(index),
                           marker={"cache": True}, keep_partial=False)
        result = fetch_entry(model, cache.root, context.options, context.environ, hooks)
    size = result.path.stat().st_size
    cache.make_room(0, keep=(ref.folder, key))
    context.progress.finish(index, size)
    seconds = time.monotonic() - started
    log.info("model %s: fetched %d bytes in %.1f s into the cache as %s/%s", ref.field, result.bytes_transferred,
             seconds, ref.folder, model.name)
    return Fetched(ref, model.name, size, False, result.bytes_transferred, seconds)


def _plan_one(ref: Requested, index: int, context: _Context) -> Fetched:
    """A dry run: the file from the cache, else what the server says of it (its name and size)."""
    transport, token_env, identity = _source(ref, context)
    if ref.filename:
        context.rules.check_format(ref.filename)
    key = cache_key(identity, ref.sha256)
    found = context.cache.lookup(ref.folder, key, ref.sha256)
    if found is not None:
        return Fetched(ref, _name_of(found), found.size, True)
    model = _model(ref, key, transport, token_env, context, probe_size=True)
    return Fetched(ref, model.name, model.size, False)


def _name_of(found: CachedFile) -> str:
    return f"{found.key}/{found.path.name}"


def _model(ref: Requested, key: str, transport: Transport, token_env: str | None, context: _Context, *,
           probe_size: bool = False) -> UrlModel:
    """The file to fetch: its name from the request, the URL, or the server (Content-Disposition), checked
    against the allowed formats; its size when the server was asked anyway."""
    filename = ref.filename or _safe_name(_url_name(ref.url))
    size = None
    if probe_size or not filename or os.path.splitext(filename)[1].lower() not in SAFE_EXTENSIONS + PICKLE_EXTENSIONS:
        probed_name, size = _probe(ref, transport, token_env, context)
        if not ref.filename and probed_name:
            filename = probed_name
    if not filename:
        raise Refused("refused_format", "neither the URL nor the server names the file; give `filename`")
    context.rules.check_format(filename)
    if size is not None:
        _check_size(size, context.options)
    return UrlModel(ref.url, ref.folder, key, filename, ref.sha256, size, token_env)


def _check_size(size: int, options: DownloadOptions) -> None:
    if options.max_bytes is not None and size > options.max_bytes:
        raise FetchFailed(f"the file is {size} bytes, over the limit of {options.max_bytes}", retryable=False,
                          kind="too_large")


def _probe(ref: Requested, transport: Transport, token_env: str | None,
           context: _Context) -> tuple[str | None, int | None]:
    """(file name, size) as the server gives them, asking for the first byte only."""
    entry = _probe_entry(ref, "probe", token_env)
    response = transport.open(entry, 0, token_for(entry, context.environ), context.options, probe=True)
    try:
        status = response.status
        if status >= 400:
            raise FetchFailed(f"HTTP {status} from {urlsplit(response.url).hostname}", kind="http_status",
                              status=status, retryable=status in {408, 425, 429, 500, 502, 503, 504})
        return _disposition_name(response.headers) or _safe_name(_url_name(response.url)), _total_size(response)
    finally:
        response.close()


def _probe_entry(ref: Requested, key: str, token_env: str | None) -> UrlModel:
    return UrlModel(ref.url, ref.folder, key or "-", ref.filename or "-", ref.sha256, None, token_env)


def _total_size(response: Opened) -> int | None:
    total = str(response.headers.get("Content-Range") or "").rpartition("/")[2]
    if response.status == 206 and total.isdigit():
        return int(total)
    length = str(response.headers.get("Content-Length") or "")
    return int(length) if response.status == 200 and length.isdigit() else None


def _disposition_name(headers: Any) -> str | None:
    match = _DISPOSITION.search(str(headers.get("Content-Disposition") or ""))
    if not match:
        return None
    return _safe_name(unquote(match.group(1) or match.group(2) or ""))


def _url_name(url: str) -> str:
    return unquote(urlsplit(url).path.rsplit("/", 1)[-1])


def _safe_name(name: str) -> str | None:
    """A file name a server or URL gives, made safe for the cache: a plain name, never hidden."""
    name = _UNSAFE_CHARS.sub("_", name.replace("\\", "/").rsplit("/", 1)[-1].strip()).lstrip(".")[:200]
    return name or None


def cache_key(identity: str, sha256: str | None) -> str:
    """The cache folder of one source: two URLs never share one; a sha256, when given, is part of it."""
    return hashlib.sha256(f"{identity}\0{sha256 or ''}".encode()).hexdigest()[:16]


# --- sources -----------------------------------------------------------------------------------------------


def _source(ref: Requested, context: _Context) -> tuple[Transport, str | None, str]:
    """How to fetch the file (transport, token variable) and what identifies its source, or Refused."""
    parts = urlsplit(ref.url)
    scheme = parts.scheme.lower()
    if scheme == "s3":
        return _s3_source(ref, context)
    if scheme not in {"https", "http"}:
        raise Refused("url_refused", f"scheme {scheme!r} is not fetched (https:// or s3://)")
    host = (parts.hostname or "").lower()
    if not context.rules.allows(host):
        raise Refused("host_not_allowed", f"{host or 'the URL'} is not a host this worker fetches models from "
                      "(MODEL_URL_HOSTS)")
    transport = PinnedTransport(urlsafety.url_policy(context.settings))
    return transport, context.rules.token_env(host, context.environ), f"url\0{ref.url}"


def _s3_source(ref: Requested, context: _Context) -> tuple[Transport, str | None, str]:
    parts = urlsplit(ref.url)
    bucket, key = parts.netloc, unquote(parts.path.lstrip("/"))
    if not bucket or not key:
        raise Refused("url_refused", "an s3:// URL needs a bucket and a key (s3://bucket/path/to/file)")
    try:
        target = s3_target(context.settings, context.job.s3_config, require_bucket=False)
        if target is None:
            raise Refused("host_not_allowed", "no S3 credentials are configured (BUCKET_* variables or s3Config)")
        check_input_scope(bucket, key, context.settings, ref.field, own_credentials=target.from_request)
    except WorkerError as exc:
        raise Refused("host_not_allowed", exc.message) from None
    # With a caller's own credentials the file is theirs: their key is part of what it is cached under.
    owner = hashlib.sha256((target.access_key or "").encode()).hexdigest()[:16] if target.from_request else "worker"
    identity = f"s3\0{target.endpoint_url or ''}\0{bucket}/{key}\0{owner}"
    return S3Transport(client_for(target, context.settings), bucket, key, target.secrets()), None, identity


class S3Transport:
    """An object of the operator's (or the caller's) S3 storage, read with a Range from `offset` on."""

    def __init__(self, client: Any, bucket: str, key: str, secrets: list[str]) -> None:
        self.client, self.bucket, self.key, self.secrets = client, bucket, key, secrets

    def open(self, entry: Any, offset: int, token: str | None, options: DownloadOptions, *,
             probe: bool = False) -> Opened:
        url = f"s3://{self.bucket}/{self.key}"
        try:
            if probe:
                head = self.client.head_object(Bucket=self.bucket, Key=self.key)
                headers = CaseInsensitiveDict({"Content-Length": str(head.get("ContentLength", ""))})
                return Response(200, headers, url, None, lambda size: iter(()), lambda: None)
            extra = {"Range": f"bytes={offset}-"} if offset else {}
            got = self.client.get_object(Bucket=self.bucket, Key=self.key, **extra)
        except ClientError as exc:
            return self._refused(exc, url)
        except BotoCoreError as exc:
            raise TransientFetchError(error_reason(exc, self.secrets)) from None
        headers = CaseInsensitiveDict({"Content-Length": str(got.get("ContentLength", "")),
                                       "Content-Range": got.get("ContentRange") or ""})
        status = int(got.get("ResponseMetadata", {}).get("HTTPStatusCode") or 200)
        body = got["Body"]
        return Response(status, headers, url, None, lambda size: self._chunks(body, size), body.close)

    def _chunks(self, body: Any, size: int) -> Iterator[bytes]:
        try:
            yield from body.iter_chunks(size)
        except BotoCoreError as exc:  # the connection dropped mid-body: resumed from what reached the disk
            raise TransientFetchError(error_reason(exc, self.secrets)) from None

    def _refused(self, exc: ClientError, url: str) -> Opened:
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if status == 416:
            return Response(416, CaseInsensitiveDict(), url, None, lambda size: iter(()), lambda: None)
        if status in {301, 400, 403, 404}:
            # Missing and forbidden read the same: an answer must not tell which objects or buckets exist.
            raise FetchFailed(f"{url} does not exist or cannot be read with these credentials", retryable=False,
                              kind="http_status", status=status) from None
        raise FetchFailed(error_reason(exc, self.secrets), retryable=status >= 500 or status == 429,
                          kind="http_status", status=status or None) from None


# --- progress ----------------------------------------------------------------------------------------------


class _FetchProgress:
    """The job's progress while its files arrive (schema.ModelFetchProgress): bytes of all of them together, at
    most every half second; `percent` never goes down."""

    def __init__(self, send: Sender | None, count: int, interval: float = 0.5) -> None:
        self.send, self.count, self.interval = send, count, interval
        self.done: dict[int, int] = {}
        self.totals: dict[int, int | None] = {}
        self.finished: set[int] = set()
        self.percent = 0.0
        self.last = 0.0
        self.lock = threading.Lock()

    def reporter(self, index: int) -> Callable[[int, int | None], None]:
        def report(done: int, total: int | None) -> None:
            with self.lock:
                self.done[index], self.totals[index] = done, total
            self._emit()

        return report

    def finish(self, index: int, size: int | None) -> None:
        with self.lock:
            self.finished.add(index)
            self.done[index] = self.totals[index] = size or 0
        self._emit(force=len(self.finished) == self.count)

    def _emit(self, force: bool = False) -> None:
        if self.send is None:
            return
        with self.lock:
            now = time.monotonic()
            if not force and now - self.last < self.interval:
                return
            self.last = now
            totals = [self.totals.get(i) for i in range(self.count)]
            total = None if any(t is None for t in totals) else sum(t or 0 for t in totals)
            done = sum(self.done.values())
            share = done / total if total else len(self.finished) / self.count
            self.percent = max(self.percent, round(min(100.0, 100.0 * share), 1))
            payload = {"stage": "fetching_models", "models": self.count, "models_done": len(self.finished),
                       "bytes_done": done, "bytes_total": total, "percent": self.percent}
        try:
            self.send(payload)
        except Exception:  # progress must never fail a job
            log.exception("progress update failed")
