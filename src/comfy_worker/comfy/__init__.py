"""ComfyUI behind one interface (`ComfyConnection`); every fact of its wire protocol lives in this package."""

from __future__ import annotations

from collections.abc import Sequence

from ..settings import Settings
from .attached import AttachedComfy
from .connection import ComfyConnection, FileRef, JobFiles, PromptOutcome, PromptWatch
from .http import HttpComfy
from .managed import ManagedComfy

__all__ = ["AttachedComfy", "ComfyConnection", "FileRef", "HttpComfy", "JobFiles", "ManagedComfy",
           "PromptOutcome", "PromptWatch", "connect"]


def connect(settings: Settings, comfyui_args: Sequence[str] = ()) -> ManagedComfy | AttachedComfy:
    """The connection the settings ask for: a ComfyUI of the worker's own, or one at COMFYUI_URL."""
    if settings.manages_process:
        return ManagedComfy(settings, comfyui_args)
    return AttachedComfy(settings)
