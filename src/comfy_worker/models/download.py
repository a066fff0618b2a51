"""Fetch the files of a model manifest: in parallel, resumable, checksum-verified, idempotent.

Layout below a models root (``/comfyui/models`` in the image, ``/runpod-volume/models`` on a volume)::

    <root>/<folder>/<filename>                     the verified file ComfyUI sees
    <root>/.partial/<folder>/<filename>.part       bytes received so far (resumed with an HTTP Range)
    <root>/.partial/<folder>/<filename>.lock       held while one process fetches the file
    <root>/.verified/<folder>/<filename>.json      size + mtime + sha256 of the verified file

Partial files and markers live outside the folder ComfyUI lists, so an unfinished download never shows up
as a model. A file whose marker matches its size and mtime is not hashed again; a second run transfers
nothing.

Tokens: an entry's token goes only to the scheme, host and port of the entry's own URL. Redirects are
followed by this module (not by requests) so that a redirect to another host (a CDN with a signed URL)
never receives it.

Transports: models.yaml entries are the operator's and fetched with `requests`; a URL a request names goes
through :class:`PinnedTransport` (every hop checked by ``storage.urlsafety`` and connected to at the checked
address), an ``s3://`` object through the S3 transport of ``models.requested``. `FetchHooks` carries those
and what else a request-named file needs: a size cap, progress reports, nothing left behind on failure.
"""

from __future__ import annotations

import contextlib
import contextvars
import fcntl
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urljoin, urlsplit

import requests
import urllib3

from .. import redaction
from ..errors import ErrorCode, WorkerError
from ..problems import problem
from ..storage import urlsafety
from .manifest import ModelEntry

log = logging.getLogger(__name__)

_REDIRECTS = {301, 302, 303, 307, 308}
# Statuses worth another try: the server or a proxy had a moment, not a permanent refusal.
_RETRYABLE_STATUS = {408, 425, 429, 500, 502, 503, 504}
_USER_AGENT = "comfy-worker-model-fetch/1"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_GGUF_MAGIC = b"GGUF"


@dataclass(frozen=True)
class DownloadOptions:
    workers: int = 4
    connect_timeout: float = 15.0
    read_timeout: float = 60.0
    retries: int = 4
    retry_backoff: float = 1.0
    max_redirects: int = 10
    chunk_size: int = 1 << 20
    progress_interval: float = 10.0
    check_safetensors: bool = True  # also GGUF's magic: a file is checked by the format its name says
    max_bytes: int | None = None  # larger files are refused before (Content-Length) or while they arrive


class Outcome(str, Enum):
    DOWNLOADED = "downloaded"
    PRESENT = "present"


@dataclass(frozen=True)
class DownloadResult:
    entry: Wanted
    path: Path
    outcome: Outcome
    bytes_transferred: int


@dataclass(frozen=True)
class EntryFailure:
    label: str
    url: str
    reason: str
    kind: str = "download"
    status: int | None = None
    retryable: bool = False

    def as_dict(self) -> dict[str, str]:
        return {"model": self.label, "url": self.url, "reason": self.reason}


class DownloadError(Exception):
    """One or more entries could not be fetched; every failure names its entry."""

    def __init__(self, failures: Sequence[EntryFailure]) -> None:
        self.failures = list(failures)
        lines = "; ".join(f"{f.label} ({f.url}): {f.reason}" for f in self.failures)
        super().__init__(f"{len(self.failures)} model file(s) could not be fetched: {lines}")

    def to_worker_error(self) -> WorkerError:
        # The shape every MISSING_MODELS has: one problem per model that could not be had.
        problems = [problem(None, None, "model_download_failed", None, f"{f.label}: {f.reason}", f.url)
                    for f in self.failures]
        return WorkerError(ErrorCode.MISSING_MODELS, str(self),
                           {"source": "preflight", "problems": problems, "node_errors": {},
                            "download_failures": [f.as_dict() for f in self.failures]})


class FetchFailed(Exception):
    """A failure of one entry; ``retryable`` says whether another attempt can help, ``kind`` what went wrong
    (``http_status`` with ``status``, ``too_large``, ``checksum_mismatch``, ``invalid_file``, ``url_refused``,
    ``connection``, ``download``)."""

    def __init__(self, reason: str, *, retryable: bool, kind: str = "download", status: int | None = None) -> None:
        super().__init__(reason)
        self.retryable = retryable
        self.kind = kind
        self.status = status



class TransientFetchError(Exception):
    """A transport's failure that another attempt (resuming) may get past: a dropped or refused connection."""


class Wanted(Protocol):
    """What a fetch needs of an entry: a models.yaml `ModelEntry`, or a file a request names by URL."""

    @property
    def url(self) -> str: ...
    @property
    def folder(self) -> str: ...
    @property
    def filename(self) -> str: ...
    @property
    def sha256(self) -> str | None: ...
    @property
    def size(self) -> int | None: ...
    @property
    def token_env(self) -> str | None: ...
    @property
    def label(self) -> str: ...
    def path_under(self, models_root: Path) -> Path: ...


class Opened(Protocol):
    """A response whose body is still to be read: status and headers (case-insensitive) of the last hop."""

    status: int
    headers: Any
    url: str
    published_sha256: str | None

    def chunks(self, size: int) -> Iterator[bytes]: ...
    def close(self) -> None: ...


class Transport(Protocol):
    """Opens the entry's URL from `offset` on; `probe` asks for its headers only (the first byte at most)."""

    def open(self, entry: Wanted, offset: int, token: str | None, options: DownloadOptions, *,
             probe: bool = False) -> Opened: ...


@dataclass
class FetchHooks:
    """What a fetch of a request-named file adds to a models.yaml fetch."""

    transport: Transport | None = None  # default: requests, redirects followed here
    on_bytes: Callable[[int, int | None], None] | None = None  # (bytes on disk, total when known)
    marker: dict[str, Any] = field(default_factory=dict)  # recorded with the verification
    keep_partial: bool = True  # False: a failed fetch leaves no partial file behind
    published_sha256: str | None = None  # set by the fetch: the hash the server publishes (Hugging Face)
    announced_size: int | None = None  # set by the fetch: the whole file's size as the server gave it


# --- public API --------------------------------------------------------------------------------------


def ensure_models(entries: Sequence[ModelEntry], models_root: Path, *,
                  options: DownloadOptions | None = None,
                  environ: Mapping[str, str] | None = None) -> list[DownloadResult]:
    """Make every entry present and verified below ``models_root``; fetch what is missing.

    Entries are fetched in parallel. All entries are attempted even when some fail; then a
    :class:`DownloadError` lists every failure. Safe to call again: verified files cost one ``stat``.
    """
    options = options or DownloadOptions()
    environ = os.environ if environ is None else environ
    if not entries:
        return []
    results: list[DownloadResult] = []
    failures: list[EntryFailure] = []
    with ThreadPoolExecutor(max_workers=max(1, min(options.workers, len(entries))),
                            thread_name_prefix="model-fetch") as pool:
        # Each in the caller's context: a job's on-demand downloads log under its id.
        futures = [(entry, pool.submit(contextvars.copy_context().run, fetch_entry, entry, models_root, options,
                                       environ)) for entry in entries]
        for entry, future in futures:
            try:
                results.append(future.result())
            except FetchFailed as exc:
                reason = scrub_reason(str(exc), entry, environ)
                log.error("model %s failed: %s", entry.label, reason)
                failures.append(EntryFailure(entry.label, redact_url(entry.url), reason))
    if failures:
        raise DownloadError(failures)
    return results


def missing_entries(entries: Sequence[ModelEntry], models_root: Path) -> list[ModelEntry]:
    """Entries without a file below ``models_root`` (no network, no hashing)."""
    return [entry for entry in entries if not entry.path_under(models_root).is_file()]


def is_verified(entry: Wanted, models_root: Path) -> bool:
    """True when the file exists and its marker matches its size, mtime and the entry's sha256."""
    path = entry.path_under(models_root)
    marker = marker_path(entry, models_root)
    try:
        stat = path.stat()
        recorded = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    # Without an expected hash (a URL a request names) the hash taken when the file was verified stands.
    digest_ok = recorded.get("sha256") == entry.sha256 if entry.sha256 else bool(recorded.get("sha256"))
    return digest_ok and recorded.get("size") == stat.st_size and recorded.get("mtime_ns") == stat.st_mtime_ns


def verify_file(entry: Wanted, models_root: Path, options: DownloadOptions | None = None,
                marker: dict[str, Any] | None = None) -> str | None:
    """Check a present file against its entry without any network; returns a problem or None."""
    options = options or DownloadOptions()
    if is_verified(entry, models_root):
        return None
    path = entry.path_under(models_root)
    if not path.is_file():
        return "file is missing"
    digest = _hash_file(path)
    found = content_problem(entry, path, digest, options)
    if found is None:
        _write_marker(entry, models_root, path, digest, marker)
    return found[1] if found else None


def fetch_entry(entry: Wanted, models_root: Path, options: DownloadOptions,
                environ: Mapping[str, str], hooks: FetchHooks | None = None) -> DownloadResult:
    """Fetch one entry unless already verified; raises FetchFailed with a reason."""
    hooks = hooks or FetchHooks()
    path = entry.path_under(models_root)
    if is_verified(entry, models_root):
        log.debug("model %s already verified at %s", entry.label, path)
        return DownloadResult(entry, path, Outcome.PRESENT, 0)
    part = _partial_path(entry, models_root)
    try:
        part.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FetchFailed(f"cannot create {part.parent}: {exc}", retryable=False) from None
    with _locked(part.with_name(part.name[: -len(".part")] + ".lock")):
        # Another process may have finished the file while this one waited for the lock.
        if is_verified(entry, models_root):
            return DownloadResult(entry, path, Outcome.PRESENT, 0)
        if path.is_file():
            if verify_file(entry, models_root, options, hooks.marker) is None:
                log.info("model %s present at %s and verified", entry.label, path)
                return DownloadResult(entry, path, Outcome.PRESENT, 0)
            log.warning("model %s at %s does not match the manifest; fetching it again", entry.label, path)
        try:
            transferred = _download(entry, part, options, environ, hooks)
            digest = _hash_file(part)
            found = content_problem(entry, part, digest, options, hooks.published_sha256)
            if found is None and hooks.announced_size not in (None, part.stat().st_size):
                # Another writer's bytes in the same partial file (a lock that did not hold) change its size.
                found = ("checksum_mismatch", (f"size mismatch: the server announced {hooks.announced_size} "
                                               f"bytes, got {part.stat().st_size}"))
        except BaseException:  # a refusal, a dropped connection, a full disk, a cancelled job
            if not hooks.keep_partial:
                part.unlink(missing_ok=True)
            raise
        if found is not None:
            part.unlink(missing_ok=True)
            raise FetchFailed(found[1] + " (partial file deleted)", retryable=False, kind=found[0])
        path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(part, path)
        _write_marker(entry, models_root, path, digest, hooks.marker)
        log.info("model %s verified and stored at %s", entry.label, path)
        return DownloadResult(entry, path, Outcome.DOWNLOADED, transferred)


# --- transfer ----------------------------------------------------------------------------------------


_TRANSIENT = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
              urllib3.exceptions.HTTPError, urlsafety.ConnectionFailed, TransientFetchError)


def _download(entry: Wanted, part: Path, options: DownloadOptions, environ: Mapping[str, str],
              hooks: FetchHooks) -> int:
    token = token_for(entry, environ)
    transferred = 0
    transport = hooks.transport or HttpTransport()
    try:
        for attempt in range(options.retries + 1):
            try:
                transferred += _attempt(entry, part, transport, token, options, hooks)
                return transferred
            except FetchFailed as exc:
                if not exc.retryable or attempt == options.retries:
                    raise
                reason = str(exc)
            except _TRANSIENT as exc:
                if attempt == options.retries:
                    raise FetchFailed(f"connection failed after {attempt + 1} attempts: {exc}",
                                      retryable=True, kind="connection") from None
                reason = f"connection problem: {exc}"
            pause = min(options.retry_backoff * (2 ** attempt), 30.0)
            log.warning("model %s: %s; resuming in %.1f s (attempt %d of %d)", entry.label,
                        scrub_reason(reason, entry, environ), pause, attempt + 2, options.retries + 1)
            time.sleep(pause)
    finally:
        if hooks.transport is None:
            transport.close()  # type: ignore[attr-defined]
    raise AssertionError("unreachable")  # pragma: no cover


def _attempt(entry: Wanted, part: Path, transport: Transport, token: str | None, options: DownloadOptions,
             hooks: FetchHooks) -> int:
    offset = part.stat().st_size if part.exists() else 0
    response = transport.open(entry, offset, token, options)
    try:
        hooks.published_sha256 = response.published_sha256 or hooks.published_sha256
        mode, offset = _accepted(entry, part, response, offset)
        if mode is None:
            return 0
        length = response.headers.get("Content-Length")
        expected = int(length) if length and length.isdigit() else None
        total = (offset + expected) if expected is not None else entry.size
        if expected is not None:
            hooks.announced_size = total
        _check_size(total, options)
        written = 0
        progress = _Progress(entry.label, offset, total, options.progress_interval, report=hooks.on_bytes)
        with part.open(mode) as sink:
            for chunk in response.chunks(options.chunk_size):
                sink.write(chunk)
                written += len(chunk)
                _check_size(offset + written, options)
                progress.update(len(chunk))
    finally:
        response.close()
    if expected is not None and written < expected:
        raise FetchFailed(f"connection closed after {written} of {expected} bytes", retryable=True,
                          kind="connection")
    progress.done()
    return written


def _accepted(entry: Wanted, part: Path, response: Opened, offset: int) -> tuple[str | None, int]:
    """How to write the body: ("ab", offset) resuming, ("wb", 0) from the start, (None, offset) nothing to
    write; a refusal raises FetchFailed."""
    status = response.status
    if status == 416 and offset > 0:
        # The server has nothing past our offset: the partial file is complete (or too long; the checksum
        # decides).
        return None, offset
    if status == 206:
        start = _content_range_start(response.headers.get("Content-Range", ""))
        if start != offset:
            part.unlink(missing_ok=True)
            raise FetchFailed(f"server resumed at byte {start}, asked for {offset}; restarting", retryable=True)
        return "ab", offset
    if status == 200:
        return "wb", 0
    host = urlsplit(response.url).hostname
    if status in (401, 403):
        hint = f" (is {entry.token_env} set?)" if entry.token_env else " (does the URL need a token_env?)"
        raise FetchFailed(f"HTTP {status} from {host}{hint}", retryable=False, kind="http_status", status=status)
    raise FetchFailed(f"HTTP {status} from {host}", retryable=status in _RETRYABLE_STATUS, kind="http_status",
                      status=status)


def _check_size(size: int | None, options: DownloadOptions) -> None:
    if options.max_bytes is not None and size is not None and size > options.max_bytes:
        raise FetchFailed(f"the file is {'at least ' if size else ''}{size} bytes, over the limit of "
                          f"{options.max_bytes}", retryable=False, kind="too_large")


@dataclass
class Response:
    status: int
    headers: Any
    url: str
    published_sha256: str | None
    _chunks: Callable[[int], Iterator[bytes]]
    _close: Callable[[], None]

    def chunks(self, size: int) -> Iterator[bytes]:
        return self._chunks(size)

    def close(self) -> None:
        self._close()


Hop = Callable[[str, dict[str, str]], Response]


def follow_redirects(entry: Wanted, token: str | None, offset: int, options: DownloadOptions, hop: Hop, *,
                     probe: bool = False) -> Response:
    """GET the entry's URL, following redirects here: the token goes to the URL's own scheme, host and port
    only, the hash a server publishes (Hugging Face's `X-Linked-Etag`) is taken from that origin only."""
    url = entry.url
    origin = _origin(entry.url)
    published = None
    for _hop in range(options.max_redirects + 1):
        headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
        if offset or probe:
            headers["Range"] = "bytes=0-0" if probe else f"bytes={offset}-"
        if token and _origin(url) == origin:
            headers["Authorization"] = f"Bearer {token}"
        response = hop(url, headers)
        if _origin(url) == origin:
            published = published or published_sha256(response.headers)
        if response.status in _REDIRECTS and response.headers.get("Location"):
            next_url = urljoin(url, response.headers["Location"])
            response.close()
            if urlsplit(next_url).scheme not in {"http", "https"}:
                raise FetchFailed(f"redirect to unsupported URL scheme: {redact_url(next_url)}", retryable=False,
                                  kind="url_refused")
            log.debug("model %s: redirected to %s", entry.label, redact_url(next_url))
            url = next_url
            continue
        response.url, response.published_sha256 = url, published
        return response
    raise FetchFailed(f"more than {options.max_redirects} redirects", retryable=False, kind="url_refused")


class HttpTransport:
    """The operator's URLs (models.yaml): plain `requests`, redirects followed by `follow_redirects`."""

    def __init__(self) -> None:
        self.session = requests.Session()

    def open(self, entry: Wanted, offset: int, token: str | None, options: DownloadOptions, *,
             probe: bool = False) -> Opened:
        def hop(url: str, headers: dict[str, str]) -> Response:
            got = self.session.get(url, headers=headers, stream=True, allow_redirects=False,
                                   timeout=(options.connect_timeout, options.read_timeout))
            return Response(got.status_code, got.headers, url, None,
                             lambda size: got.iter_content(chunk_size=size), got.close)

        return follow_redirects(entry, token, offset, options, hop, probe=probe)

    def close(self) -> None:
        self.session.close()


class PinnedTransport:
    """URLs a request names: every hop checked against the SSRF policy and connected to at the checked
    address (``urlsafety.open_pinned``), so a redirect or a DNS answer cannot reach the worker's network."""

    def __init__(self, policy: urlsafety.UrlPolicy) -> None:
        self.policy = policy

    def open(self, entry: Wanted, offset: int, token: str | None, options: DownloadOptions, *,
             probe: bool = False) -> Opened:
        def hop(url: str, headers: dict[str, str]) -> Response:
            try:
                got = urlsafety.open_pinned(url, self.policy, headers=headers, timeout=options.read_timeout)
            except urlsafety.ConnectionFailed:
                raise
            except urlsafety.UrlRefused as exc:
                raise FetchFailed(f"{redact_url(url)} refused: {exc}", retryable=False, kind="url_refused") from None

            def close() -> None:
                got.release_conn()
                got.close()

            return Response(got.status, got.headers, url, None, lambda size: got.stream(size), close)

        return follow_redirects(entry, token, offset, options, hop, probe=probe)

    def close(self) -> None:
        pass


def published_sha256(headers: Any) -> str | None:
    """The SHA-256 a Hugging Face `resolve` answer publishes for an LFS file (`X-Linked-Etag`), if any."""
    value = str(headers.get("X-Linked-Etag") or "").strip().removeprefix("W/").strip('"').lower()
    return value if _SHA256.match(value) else None


def token_for(entry: Wanted, environ: Mapping[str, str]) -> str | None:
    if entry.token_env is None:
        return None
    token = environ.get(entry.token_env, "").strip()
    if not token:
        log.warning("model %s names token variable %s, which is not set; fetching without a token",
                    entry.label, entry.token_env)
        return None
    return token


# --- content checks ----------------------------------------------------------------------------------


def _check_content(entry: Wanted, path: Path, digest: str, options: DownloadOptions) -> str | None:
    found = content_problem(entry, path, digest, options)
    return found[1] if found else None


def content_problem(entry: Wanted, path: Path, digest: str, options: DownloadOptions,
                    published: str | None = None) -> tuple[str, str] | None:
    """(kind, reason) of what is wrong with a file: its size, its hash (the entry's, else the one the server
    published), or its format's header; None when it is good."""
    size = path.stat().st_size
    if entry.size is not None and size != entry.size:
        return "checksum_mismatch", f"size mismatch: expected {entry.size} bytes, got {size}"
    if entry.sha256 is not None and digest != entry.sha256:
        return "checksum_mismatch", f"sha256 mismatch: expected {entry.sha256}, got {digest}"
    if entry.sha256 is None and published is not None and digest != published:
        return "checksum_mismatch", f"sha256 mismatch: the server publishes {published}, got {digest}"
    name = entry.filename.lower()
    if options.check_safetensors and name.endswith((".safetensors", ".sft")):
        found = check_safetensors_header(path)
        return ("invalid_file", found) if found else None
    if options.check_safetensors and name.endswith(".gguf"):
        with path.open("rb") as handle:
            if handle.read(4) != _GGUF_MAGIC:
                return "invalid_file", "not a valid GGUF file: no GGUF magic"
    return None


def check_safetensors_header(path: Path) -> str | None:
    """None when the file opens as safetensors; otherwise what is wrong.

    The ``safetensors`` package is imported here only, through its numpy bridge, so callers never pull
    in torch. Without the package (or numpy) the header is parsed by hand.
    """
    try:
        from safetensors import safe_open
    except ImportError:
        return _parse_header_without_library(path)
    try:
        with safe_open(str(path), framework="numpy") as handle:
            handle.keys()
            handle.metadata()
    except ImportError:
        return _parse_header_without_library(path)
    except Exception as exc:  # noqa: BLE001 - the library raises several types for a bad header
        return f"not a valid safetensors file: {exc}"
    return None


def _parse_header_without_library(path: Path) -> str | None:
    # Fallback for environments without the library: the format is an 8-byte little-endian header
    # length followed by that many bytes of JSON.
    try:
        with path.open("rb") as handle:
            length = int.from_bytes(handle.read(8), "little")
            if length <= 0 or length > 100 * 1024 * 1024:
                return "not a valid safetensors file: implausible header length"
            header = json.loads(handle.read(length))
    except (OSError, ValueError) as exc:
        return f"not a valid safetensors file: {exc}"
    return None if isinstance(header, dict) else "not a valid safetensors file: header is not an object"


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(8 << 20):
            digest.update(chunk)
    return digest.hexdigest()


# --- bookkeeping -------------------------------------------------------------------------------------


def _partial_path(entry: Wanted, models_root: Path) -> Path:
    target = entry.path_under(models_root / ".partial")
    return target.with_name(target.name + ".part")


def marker_path(entry: Wanted, models_root: Path) -> Path:
    target = entry.path_under(models_root / ".verified")
    return target.with_name(target.name + ".json")


def _write_marker(entry: Wanted, models_root: Path, path: Path, digest: str,
                  extra: dict[str, Any] | None = None) -> None:
    stat = path.stat()
    marker = marker_path(entry, models_root)
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps({"sha256": digest, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                                      "url": redact_url(entry.url), **(extra or {})}), encoding="utf-8")
    except OSError as exc:
        # Without a marker the next run hashes the file again; slower, still correct.
        log.warning("could not record verification of %s: %s", entry.label, exc)


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    # Several workers may share a network volume; the lock keeps them from writing one partial file.
    with lock_path.open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _content_range_start(value: str) -> int | None:
    # "bytes 100-199/200"
    try:
        unit, _, rest = value.partition(" ")
        return int(rest.split("-", 1)[0]) if unit == "bytes" else None
    except ValueError:
        return None


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), port


def scrub_reason(text: str, entry: Wanted, environ: Mapping[str, str]) -> str:
    """A failure's text with the entry's token and any URL's query or credentials removed: HTTP libraries
    quote the whole URL (``?token=...``) in their messages."""
    secrets = [token_for(entry, environ) or "", urlsplit(entry.url).query]
    return redaction.scrub_text(text, [value for value in secrets if len(value) >= 4])


def redact_url(url: str) -> str:
    """The URL without query or credentials: signed CDN URLs and some tokens live there."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}"


class _Progress:
    def __init__(self, label: str, start: int, total: int | None, interval: float,
                 clock: Callable[[], float] = time.monotonic,
                 report: Callable[[int, int | None], None] | None = None) -> None:
        self.label, self.done_bytes, self.total, self.interval = label, start, total, interval
        self.clock, self.report = clock, report
        self.started = self.last = clock()
        self.first = start
        if start:
            log.info("model %s: resuming at %s", label, _human(start))
        else:
            log.info("model %s: fetching %s", label, _human(total) if total else "(size unknown)")

    def update(self, count: int) -> None:
        self.done_bytes += count
        if self.report is not None:
            self.report(self.done_bytes, self.total)
        now = self.clock()
        if now - self.last >= self.interval:
            self.last = now
            share = f" ({100 * self.done_bytes / self.total:.0f}%)" if self.total else ""
            log.info("model %s: %s of %s%s", self.label, _human(self.done_bytes),
                     _human(self.total) if self.total else "?", share)

    def done(self) -> None:
        elapsed = max(self.clock() - self.started, 1e-6)
        log.info("model %s: received %s in %.1f s (%s/s)", self.label, _human(self.done_bytes - self.first),
                 elapsed, _human(int((self.done_bytes - self.first) / elapsed)))


def _human(size: int | None) -> str:
    value = float(size or 0)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{int(value)} B"
        value /= 1024
    return f"{value:.1f} GiB"  # pragma: no cover


def options_from_settings(settings: Any) -> DownloadOptions:
    """Download options from the worker's Settings (`MODEL_DOWNLOAD_*`)."""
    return DownloadOptions(workers=settings.model_download_workers, read_timeout=settings.model_download_timeout,
                           retries=settings.model_download_retries)
