"""Models a job needs that models.yaml lists as `on_demand`: fetched when the job's check finds them missing."""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

from ..settings import Settings
from .download import DownloadError, ensure_models, options_from_settings
from .manifest import FetchWhen, Manifest, ManifestError, ModelEntry, load_manifest
from .volume import model_download_root

log = logging.getLogger("comfy_worker.models")


def may_fetch_on_demand(settings: Settings) -> bool:
    """Whether a job's check may start an on-demand download: the setting is on and models.yaml lists an
    `on_demand` entry."""
    if not settings.model_download_on_demand:
        return False
    try:
        return bool(_manifest(settings).select(FetchWhen.ON_DEMAND))
    except (ManifestError, OSError):  # a broken manifest fails the check itself, with its message
        return True


def _manifest(settings: Settings) -> Manifest:
    """models.yaml as it is now, read once per version of the file (asked on every job)."""
    path = settings.models_manifest
    try:
        stamp = path.stat().st_mtime_ns
    except OSError:
        return Manifest()  # no manifest: nothing on demand
    return _read_manifest(path, stamp)


@functools.lru_cache(maxsize=4)
def _read_manifest(path: Path, stamp: int) -> Manifest:
    return load_manifest(path, missing_ok=True)


def on_demand_entries(missing: list[dict[str, Any]], settings: Settings) -> list[ModelEntry] | None:
    """The models.yaml entries that provide every missing file, or None when any of them is not an
    `on_demand` entry (then fetching some would not make the job runnable)."""
    if not settings.model_download_on_demand or not missing:
        return None
    manifest = _manifest(settings)
    entries: dict[tuple[str, str], ModelEntry] = {}
    for model in missing:
        entry = manifest.lookup(str(model.get("folder")), str(model.get("file")))
        if entry is None or entry.fetch is not FetchWhen.ON_DEMAND:
            return None
        entries[(entry.folder, entry.filename)] = entry
    return list(entries.values())


def fetch_on_demand(entries: list[ModelEntry], settings: Settings) -> None:
    """Download (and verify) the entries into the model root; a failure raises its catalogued error."""
    log.info("fetching %d on-demand model(s): %s", len(entries), ", ".join(e.filename for e in entries))
    try:
        ensure_models(entries, model_download_root(settings), options=options_from_settings(settings))
    except DownloadError as exc:
        raise exc.to_worker_error() from None
