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
"""

from __future__ import annotations

import contextlib
import contextvars
import fcntl
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests

from .. import redaction
from ..errors import ErrorCode, WorkerError
from ..problems import problem
from .manifest import ModelEntry

log = logging.getLogger(__name__)

_REDIRECTS = {301, 302, 303, 307, 308}
# Statuses worth another try: the server or a proxy had a moment, not a permanent refusal.
_RETRYABLE_STATUS = {408, 425, 429, 500, 502, 503, 504}
_USER_AGENT = "comfy-worker-model-fetch/1"


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
    check_safetensors: bool = True


class Outcome(str, Enum):
    DOWNLOADED = "downloaded"
    PRESENT = "present"


@dataclass(frozen=True)
class DownloadResult:
    entry: ModelEntry
    path: Path
    outcome: Outcome
    bytes_transferred: int


@dataclass(frozen=True)
class EntryFailure:
    label: str
    url: str
    reason: str

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


class _EntryFailed(Exception):
    """A failure of one entry; ``retryable`` says whether another attempt can help."""

    def __init__(self, reason: str, *, retryable: bool) -> None:
        super().__init__(reason)
        self.retryable = retryable


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
            except _EntryFailed as exc:
                reason = _without_secrets(str(exc), entry, environ)
                log.error("model %s failed: %s", entry.label, reason)
                failures.append(EntryFailure(entry.label, _redact(entry.url), reason))
    if failures:
        raise DownloadError(failures)
    return results


def missing_entries(entries: Sequence[ModelEntry], models_root: Path) -> list[ModelEntry]:
    """Entries without a file below ``models_root`` (no network, no hashing)."""
    return [entry for entry in entries if not entry.path_under(models_root).is_file()]


def is_verified(entry: ModelEntry, models_root: Path) -> bool:
    """True when the file exists and its marker matches its size, mtime and the entry's sha256."""
    path = entry.path_under(models_root)
    marker = _marker_path(entry, models_root)
    try:
        stat = path.stat()
        recorded = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (recorded.get("sha256") == entry.sha256 and recorded.get("size") == stat.st_size
            and recorded.get("mtime_ns") == stat.st_mtime_ns)


def verify_file(entry: ModelEntry, models_root: Path, options: DownloadOptions | None = None) -> str | None:
    """Check a present file against its entry without any network; returns a problem or None."""
    options = options or DownloadOptions()
    if is_verified(entry, models_root):
        return None
    path = entry.path_under(models_root)
    if not path.is_file():
        return "file is missing"
    problem = _check_content(entry, path, _hash_file(path), options)
    if problem is None:
        _write_marker(entry, models_root, path)
    return problem


def fetch_entry(entry: ModelEntry, models_root: Path, options: DownloadOptions,
                environ: Mapping[str, str]) -> DownloadResult:
    """Fetch one entry unless already verified; raises _EntryFailed with a reason."""
    path = entry.path_under(models_root)
    if is_verified(entry, models_root):
        log.debug("model %s already verified at %s", entry.label, path)
        return DownloadResult(entry, path, Outcome.PRESENT, 0)
    part = _partial_path(entry, models_root)
    try:
        part.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _EntryFailed(f"cannot create {part.parent}: {exc}", retryable=False) from None
    with _locked(part.with_name(part.name[: -len(".part")] + ".lock")):
        # Another process may have finished the file while this one waited for the lock.
        if is_verified(entry, models_root):
            return DownloadResult(entry, path, Outcome.PRESENT, 0)
        if path.is_file():
            if verify_file(entry, models_root, options) is None:
                log.info("model %s present at %s and verified", entry.label, path)
                return DownloadResult(entry, path, Outcome.PRESENT, 0)
            log.warning("model %s at %s does not match the manifest; fetching it again", entry.label, path)
        transferred = _download(entry, part, options, environ)
        digest = _hash_file(part)
        problem = _check_content(entry, part, digest, options)
        if problem is not None:
            part.unlink(missing_ok=True)
            raise _EntryFailed(problem + " (partial file deleted)", retryable=False)
        path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(part, path)
        _write_marker(entry, models_root, path)
        log.info("model %s verified and stored at %s", entry.label, path)
        return DownloadResult(entry, path, Outcome.DOWNLOADED, transferred)


# --- transfer ----------------------------------------------------------------------------------------


def _download(entry: ModelEntry, part: Path, options: DownloadOptions, environ: Mapping[str, str]) -> int:
    token = _token_for(entry, environ)
    transferred = 0
    with requests.Session() as session:
        for attempt in range(options.retries + 1):
            try:
                transferred += _attempt(entry, part, session, token, options)
                return transferred
            except _EntryFailed as exc:
                if not exc.retryable or attempt == options.retries:
                    raise
                reason = str(exc)
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
                if attempt == options.retries:
                    raise _EntryFailed(f"connection failed after {attempt + 1} attempts: {exc}",
                                       retryable=False) from None
                reason = f"connection problem: {exc}"
            pause = min(options.retry_backoff * (2 ** attempt), 30.0)
            log.warning("model %s: %s; resuming in %.1f s (attempt %d of %d)", entry.label,
                        _without_secrets(reason, entry, environ), pause,
                        attempt + 2, options.retries + 1)
            time.sleep(pause)
    raise AssertionError("unreachable")  # pragma: no cover


def _attempt(entry: ModelEntry, part: Path, session: requests.Session, token: str | None,
             options: DownloadOptions) -> int:
    offset = part.stat().st_size if part.exists() else 0
    response = _open(entry, session, token, offset, options)
    with response:
        status = response.status_code
        if status == 416 and offset > 0:
            # The server has nothing past our offset: the partial file is complete (or too long;
            # the checksum decides).
            return 0
        if status == 206:
            start = _content_range_start(response.headers.get("Content-Range", ""))
            if start != offset:
                part.unlink(missing_ok=True)
                raise _EntryFailed(f"server resumed at byte {start}, asked for {offset}; restarting",
                                   retryable=True)
            mode = "ab"
        elif status == 200:
            offset = 0
            mode = "wb"
        elif status in (401, 403):
            hint = f" (is {entry.token_env} set?)" if entry.token_env else " (does the URL need a token_env?)"
            raise _EntryFailed(f"HTTP {status} from {urlsplit(response.url).hostname}{hint}", retryable=False)
        else:
            raise _EntryFailed(f"HTTP {status} from {urlsplit(response.url).hostname}",
                               retryable=status in _RETRYABLE_STATUS)
        length = response.headers.get("Content-Length")
        expected = int(length) if length and length.isdigit() else None
        total = (offset + expected) if expected is not None else entry.size
        written = 0
        progress = _Progress(entry.label, offset, total, options.progress_interval)
        with part.open(mode) as sink:
            for chunk in response.iter_content(chunk_size=options.chunk_size):
                sink.write(chunk)
                written += len(chunk)
                progress.update(len(chunk))
        if expected is not None and written < expected:
            raise _EntryFailed(f"connection closed after {written} of {expected} bytes", retryable=True)
        progress.done()
        return written


def _open(entry: ModelEntry, session: requests.Session, token: str | None, offset: int,
          options: DownloadOptions) -> requests.Response:
    url = entry.url
    origin = _origin(entry.url)
    for _hop in range(options.max_redirects + 1):
        headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        if token and _origin(url) == origin:
            headers["Authorization"] = f"Bearer {token}"
        response = session.get(url, headers=headers, stream=True, allow_redirects=False,
                               timeout=(options.connect_timeout, options.read_timeout))
        if response.status_code in _REDIRECTS and response.headers.get("Location"):
            next_url = urljoin(url, response.headers["Location"])
            response.close()
            if urlsplit(next_url).scheme not in {"http", "https"}:
                raise _EntryFailed(f"redirect to unsupported URL scheme: {_redact(next_url)}", retryable=False)
            log.debug("model %s: redirected to %s", entry.label, _redact(next_url))
            url = next_url
            continue
        return response
    raise _EntryFailed(f"more than {options.max_redirects} redirects", retryable=False)


def _token_for(entry: ModelEntry, environ: Mapping[str, str]) -> str | None:
    if entry.token_env is None:
        return None
    token = environ.get(entry.token_env, "").strip()
    if not token:
        log.warning("model %s names token variable %s, which is not set; fetching without a token",
                    entry.label, entry.token_env)
        return None
    return token


# --- content checks ----------------------------------------------------------------------------------


def _check_content(entry: ModelEntry, path: Path, digest: str, options: DownloadOptions) -> str | None:
    size = path.stat().st_size
    if entry.size is not None and size != entry.size:
        return f"size mismatch: expected {entry.size} bytes, got {size}"
    if digest != entry.sha256:
        return f"sha256 mismatch: expected {entry.sha256}, got {digest}"
    if options.check_safetensors and entry.filename.lower().endswith(".safetensors"):
        return check_safetensors_header(path)
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


def _partial_path(entry: ModelEntry, models_root: Path) -> Path:
    target = entry.path_under(models_root / ".partial")
    return target.with_name(target.name + ".part")


def _marker_path(entry: ModelEntry, models_root: Path) -> Path:
    target = entry.path_under(models_root / ".verified")
    return target.with_name(target.name + ".json")


def _write_marker(entry: ModelEntry, models_root: Path, path: Path) -> None:
    stat = path.stat()
    marker = _marker_path(entry, models_root)
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps({"sha256": entry.sha256, "size": stat.st_size,
                                      "mtime_ns": stat.st_mtime_ns, "url": _redact(entry.url)}),
                          encoding="utf-8")
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


def _without_secrets(text: str, entry: ModelEntry, environ: Mapping[str, str]) -> str:
    """A failure's text with the entry's token and any URL's query or credentials removed: HTTP libraries
    quote the whole URL (``?token=...``) in their messages."""
    secrets = [_token_for(entry, environ) or "", urlsplit(entry.url).query]
    return redaction.scrub_text(text, [value for value in secrets if len(value) >= 4])


def _redact(url: str) -> str:
    """The URL without query or credentials: signed CDN URLs and some tokens live there."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}"


class _Progress:
    def __init__(self, label: str, start: int, total: int | None, interval: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.label, self.done_bytes, self.total, self.interval = label, start, total, interval
        self.clock = clock
        self.started = self.last = clock()
        self.first = start
        if start:
            log.info("model %s: resuming at %s", label, _human(start))
        else:
            log.info("model %s: fetching %s", label, _human(total) if total else "(size unknown)")

    def update(self, count: int) -> None:
        self.done_bytes += count
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
