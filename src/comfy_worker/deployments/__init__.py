"""Deployed workflows: a folder of workflows, each with a manifest of typed parameters, that requests run by
name (`workflow_id` and `params`) instead of sending a graph. Loaded and checked against the live catalogue
at start; a broken one is refused with its reason, the rest serve. See docs/workflows.md#deployed-workflows."""

from .check import Deployed, Target, check_deployment
from .files import Source, read_folder, read_folders, version_of
from .manifest import Manifest, Param, params_schema
from .registry import Deployments, WorkflowCatalogue, load_deployments
from .request import deployed_only, resolve_request

__all__ = [
    "Deployed", "Deployments", "Manifest", "Param", "Source", "Target", "WorkflowCatalogue", "check_deployment",
    "deployed_only", "load_deployments", "params_schema", "read_folder", "read_folders", "resolve_request",
    "version_of",
]
