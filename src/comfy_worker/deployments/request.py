"""A job's input as the rest of the pipeline takes it: a request that names a deployed workflow becomes the
same request with that workflow's graph and its parameters as `inputs`, so that conversion, staging,
pre-flight, batches, dry runs and delivery work exactly as for a graph sent whole."""

from __future__ import annotations

from typing import Any

from ..errors import ErrorCode, WorkerError
from ..problems import problem
from ..schema import JobInput, parse_job_input
from ..settings import Settings
from .params import parameter_values
from .registry import Deployments

RULE = "DEPLOYED_WORKFLOWS_ONLY"


def resolve_request(raw: Any, settings: Settings, deployments: Deployments,
                    warnings: list[str]) -> tuple[JobInput, dict[str, Any]]:
    """The checked request, and what its result adds (`workflow_id`, `workflow_version`) when it named a
    deployed workflow. Unknown ids and bad parameters are INVALID_INPUT naming them; a graph sent to a
    deployed-only endpoint is POLICY_VIOLATION."""
    request = parse_job_input(raw, **settings.input_limits(), warnings=warnings)
    if request.list_workflows:
        return request, {}
    if request.workflow_id is None:
        if deployments.only:
            raise deployed_only()
        return request, {}
    deployed = deployments.get(request.workflow_id)
    values = parameter_values(deployed.id, deployed.source.manifest, request.params,
                              max_text=settings.max_text_chars)
    inputs: dict[str, Any] | list[dict[str, Any]] = [deployed.inputs_for(v) for v in values]
    if not isinstance(request.params, list):
        inputs = inputs[0]
    # The deployed graph is shared by every job: the pipeline never changes the workflow it is given.
    resolved = request.model_copy(update={"workflow": deployed.source.workflow, "inputs": inputs})
    resolved._param_names = {t.key: name for name, targets in deployed.targets.items() for t in targets}
    return resolved, {"workflow_id": deployed.id, "workflow_version": deployed.version}


def deployed_only() -> WorkerError:
    """POLICY_VIOLATION for a graph sent to an endpoint that runs deployed workflows only."""
    message = (f"this endpoint runs deployed workflows only ({RULE}): name one in `workflow_id` with its `params`; "
               "a job with {\"list_workflows\": true} lists them")
    return WorkerError(ErrorCode.POLICY_VIOLATION, message, {
        "source": "deployment", "node_errors": {},
        "problems": [problem(None, None, "policy_violation", None, message, RULE)],
        "policy_violations": [{"node_id": None, "class_type": None, "rule": RULE, "message": message}]})
