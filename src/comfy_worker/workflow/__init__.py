"""Workflow intelligence: UI-format conversion, request inputs, pre-flight validation, operator policy."""

from .convert import convert_ui_workflow, is_ui_workflow, to_api_workflow
from .overrides import MediaSlot, apply_inputs, randomize_seeds, set_media_name
from .policy import Policy, check_policy
from .preflight import PreflightReport, preflight
from .resolve import ResolvedWorkflow, dry_run, expand_batch, resolve_workflow

__all__ = [
    "MediaSlot", "Policy", "PreflightReport", "ResolvedWorkflow", "apply_inputs", "check_policy",
    "convert_ui_workflow", "dry_run", "expand_batch", "is_ui_workflow", "preflight", "randomize_seeds",
    "resolve_workflow", "set_media_name", "to_api_workflow",
]
