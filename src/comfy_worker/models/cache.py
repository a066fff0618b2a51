"""The cache of model files that requests name by URL: shared by the jobs of a worker and, on a network volume,
by every worker of the endpoint; capped in size, least recently used files evicted first, never a file a running
job uses.

It lives in a models root ComfyUI already searches: `<volume>/models` with a network volume, else
`$COMFYUI_DIR/models` (MODEL_DOWNLOAD_ROOT when set); MODEL_CACHE_DIR puts it elsewhere, and the worker then shows
that folder to the ComfyUI it starts. Layout below the root (the downloader's own, models.download)::

    <root>/<folder>/<key>/<filename>          the verified file; ComfyUI lists it as `<key>/<filename>`
    <root>/.verified/<folder>/<key>/<filename>.json   size, mtime, sha256 and `"cache": true`; its mtime is the
                                              file's last use
    <root>/.partial/<folder>/<key>/...        a download under way and its lock
    <root>/.inuse/<folder>/<key>.lock         held shared by every job that uses the file, exclusive to evict it
    <root>/.key/<folder>/<key>.lock           held by the one process that looks the file up or fetches it
    <root>/.evict.lock                        one eviction at a time

`<key>` comes from the URL (and the sha256 a request gives), so two URLs never share a file and two jobs naming the
same URL share one. Only files whose marker says ``"cache": true`` are ever evicted: models of the image, of
models.yaml or put on the volume by hand never are, even in the same folder. Lock files stay: removing a lock file
another process holds open would let a third lock a new file of the same name.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import yaml

from ..settings import Settings
from .volume import model_download_root, volume_model_paths_args

log = logging.getLogger("comfy_worker.models.cache")

# ComfyUI model folders a request may fetch into: folders of weights, never code (custom_nodes) or configs.
CACHE_FOLDERS = ("checkpoints", "loras", "vae", "vae_approx", "diffusion_models", "text_encoders", "clip_vision",
                 "controlnet", "style_models", "gligen", "hypernetworks", "photomaker", "upscale_models",
                 "latent_upscale_models", "audio_encoders", "model_patches", "background_removal",
                 "frame_interpolation", "optical_flow", "geometry_estimation", "detection")
YAML_SECTION = "comfy_worker_model_cache"


@dataclass(frozen=True)
class CachedFile:
    folder: str
    key: str
    path: Path
    marker: Path
    size: int
    sha256: str
    last_used: float


class Lease:
    """A job's hold on one cached file (a shared lock): eviction passes it by until the job releases it."""

    def __init__(self, handle: IO[str]) -> None:
        self._handle: IO[str] | None = handle

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle.fileno(), fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None


class ModelCache:
    def __init__(self, root: Path, max_bytes: int | None = None) -> None:
        self.root = root
        self.max_bytes = max_bytes

    @classmethod
    def from_settings(cls, settings: Settings) -> ModelCache:
        return cls(cache_root(settings), settings.model_cache_max_bytes)

    def lease(self, folder: str, key: str) -> Lease:
        """Hold the file of (folder, key) for a job, before it is looked up or fetched: an eviction that has
        begun finishes first, and none begins until the lease is released."""
        handle = _open_lock(self.root / ".inuse" / folder / f"{key}.lock")
        fcntl.flock(handle.fileno(), fcntl.LOCK_SH)
        return Lease(handle)

    @contextlib.contextmanager
    def key_lock(self, folder: str, key: str) -> Iterator[None]:
        """One process at a time looks up, and fetches when missing, the file of (folder, key): the others
        wait for its download instead of making their own."""
        with _open_lock(self.root / ".key" / folder / f"{key}.lock") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def lookup(self, folder: str, key: str, sha256: str | None = None) -> CachedFile | None:
        """The verified file of (folder, key), or None. A file that changed since it was verified is not it."""
        for entry in self._entries_of(self.root / ".verified" / folder / key, folder, key):
            if sha256 is None or entry.sha256 == sha256:
                return entry
        return None

    def touch(self, entry: CachedFile) -> None:
        """Record a use: the marker's mtime is the file's last use (the LRU order)."""
        try:
            os.utime(entry.marker)
        except OSError as exc:
            log.debug("could not record the use of %s: %s", entry.path.name, exc)

    def entries(self) -> list[CachedFile]:
        found: list[CachedFile] = []
        base = self.root / ".verified"
        for folder in sorted(p for p in base.iterdir() if p.is_dir()) if base.is_dir() else []:
            for key_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
                found.extend(self._entries_of(key_dir, folder.name, key_dir.name))
        return found

    def total_bytes(self) -> int:
        return sum(entry.size for entry in self.entries())

    def _entries_of(self, key_dir: Path, folder: str, key: str) -> list[CachedFile]:
        found = []
        for marker in sorted(key_dir.glob("*.json")) if key_dir.is_dir() else []:
            try:
                recorded: dict[str, Any] = json.loads(marker.read_text(encoding="utf-8"))
                path = self.root / folder / key / marker.name[: -len(".json")]
                stat = path.stat()
                used = marker.stat().st_mtime
            except (OSError, ValueError):
                continue
            if (recorded.get("cache") is True and recorded.get("size") == stat.st_size
                    and recorded.get("mtime_ns") == stat.st_mtime_ns and recorded.get("sha256")):
                found.append(CachedFile(folder, key, path, marker, stat.st_size, str(recorded["sha256"]), used))
        return found

    def make_room(self, incoming: int = 0, keep: tuple[str, str] | None = None) -> list[CachedFile]:
        """Evict least recently used files that no job holds until the cache, with `incoming` more bytes, fits
        MODEL_CACHE_MAX_BYTES. Files in use stay, even when the cache then stays over its cap for a while."""
        if self.max_bytes is None:
            return []
        evicted: list[CachedFile] = []
        with _open_lock(self.root / ".evict.lock") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            entries = self.entries()
            total = sum(entry.size for entry in entries) + incoming
            for entry in sorted(entries, key=lambda e: e.last_used):
                if total <= self.max_bytes:
                    break
                if (entry.folder, entry.key) != keep and self._evict(entry):
                    total -= entry.size
                    evicted.append(entry)
            if total > self.max_bytes:
                log.warning("the model cache holds %d bytes, over MODEL_CACHE_MAX_BYTES (%d): the rest is in use",
                            total, self.max_bytes)
        return evicted

    def _evict(self, entry: CachedFile) -> bool:
        with _open_lock(self.root / ".inuse" / entry.folder / f"{entry.key}.lock") as handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False  # a job uses it
            try:
                entry.marker.unlink(missing_ok=True)
                shutil.rmtree(entry.path.parent, ignore_errors=True)
                with contextlib.suppress(OSError):
                    entry.marker.parent.rmdir()
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        log.info("model cache: evicted %s/%s/%s (%d bytes, unused the longest)", entry.folder, entry.key,
                 entry.path.name, entry.size)
        return True


def _open_lock(path: Path) -> IO[str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.open("a")


def cache_root(settings: Settings) -> Path:
    """MODEL_CACHE_DIR; else the models root of `start` and `on_demand` downloads: the network volume's, where
    every worker of the endpoint finds it, or ComfyUI's own."""
    return settings.model_cache_dir or model_download_root(settings)


def cache_config(root: Path) -> dict[str, dict[str, str]]:
    """The extra_model_paths.yaml section that shows ComfyUI every cache folder."""
    return {YAML_SECTION: {"base_path": str(root), **{folder: folder for folder in CACHE_FOLDERS}}}


def cache_model_paths_args(settings: Settings, dest: Path | None = None) -> list[str]:
    """ComfyUI flags that make it list the files of a cache of its own folder (MODEL_CACHE_DIR); none for the
    default, a models root ComfyUI already searches."""
    root = settings.model_cache_dir
    if root is None:
        return []
    # One file per cache root: workers (and tests) with other caches on this machine keep their own.
    tag = hashlib.sha256(str(root).encode()).hexdigest()[:12]
    dest = dest or Path(tempfile.gettempdir()) / "comfy-worker" / f"extra_model_paths.cache-{tag}.yaml"
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text("# Generated by the worker: the cache of models that requests name by URL.\n"
                        + yaml.safe_dump(cache_config(root), sort_keys=False), encoding="utf-8")
    except OSError as exc:
        log.error("cannot write %s (%s): ComfyUI will not see the model cache at %s", dest, exc, root)
        return []
    log.info("model cache at %s (cap %s bytes)", root, settings.model_cache_max_bytes or "none")
    return ["--extra-model-paths-config", str(dest)]


def comfyui_model_paths_args(settings: Settings) -> list[str]:
    """Every extra model folder the worker shows the ComfyUI it starts: the network volume's and the cache's."""
    return volume_model_paths_args(settings) + cache_model_paths_args(settings)
