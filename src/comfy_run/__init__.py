"""A client for endpoints running this worker: submit a workflow with files and overrides, follow its progress,
cancel on Ctrl-C, save every output, and explain failures. `python -m comfy_run --help`."""

from .backends import FINAL, Backend, BackendError, LocalBackend, RunPodBackend
from .display import ProgressDisplay, describe_error
from .outcome import Outcome, entry_data, outputs_with_data, parse_error
from .runner import run_workflow
from .spec import JobSpec, UsageError, parse_image, parse_override, parse_param

__all__ = ["FINAL", "Backend", "BackendError", "JobSpec", "LocalBackend", "Outcome", "ProgressDisplay",
           "RunPodBackend", "UsageError", "describe_error", "entry_data", "outputs_with_data", "parse_error", "parse_image", "parse_override", "parse_param",
           "run_workflow"]
