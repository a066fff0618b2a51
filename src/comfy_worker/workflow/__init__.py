"""Workflow intelligence: UI-format conversion, request inputs, output isolation, pre-flight validation,
operator policy. Pure: no I/O, no ComfyUI connection; the catalogue and model lists come in as plain data."""

from .convert import convert_ui_workflow, is_ui_workflow, to_api_workflow
from .isolate import JOB_MARKER_INPUT, isolate_outputs
from .overrides import MediaSlot, apply_inputs, randomize_seeds
from .policy import Policy, check_policy
from .preflight import PreflightReport, preflight
from .resolve import (
                      ResolvedWorkflow,
                      build_workflow,
                      check_workflow,
                      dry_run,
                      expand_batch,
                      for_each_item,
                      resolve_workflow,
)

__all__ = [
    "JOB_MARKER_INPUT", "MediaSlot", "Policy", "PreflightReport", "ResolvedWorkflow", "apply_inputs",
    "build_workflow", "check_policy", "check_workflow", "convert_ui_workflow", "dry_run", "expand_batch",
    "for_each_item", "is_ui_workflow", "isolate_outputs", "preflight", "randomize_seeds", "resolve_workflow",
    "to_api_workflow",
]
