"""The workflows this worker serves by name: loaded and checked once at start, looked up per request, and
listed for a job that asks for the catalogue."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any

from ..comfy import ComfyConnection
from ..errors import WorkerError, invalid_input
from ..models.on_demand import on_demand_entries
from ..problems import closest
from ..redaction import JOBS_SUBFOLDER
from ..schema import DeployedWorkflow, UnavailableWorkflow, WorkflowCatalogue
from ..settings import Settings
from ..workflow import Policy
from .check import Deployed, check_deployment
from .files import Source, broken, deployment_folders, file_problem, read_folders

log = logging.getLogger("comfy_worker.deployments")


@dataclass
class Deployments:
    """Deployed workflows by id: those that serve, and those refused with the reason found at start."""

    ready: dict[str, Deployed] = field(default_factory=dict)
    unavailable: dict[str, WorkerError] = field(default_factory=dict)
    only: bool = False  # raw graphs refused (DEPLOYED_WORKFLOWS_ONLY)
    seconds: float = 0.0

    @classmethod
    def none(cls, settings: Settings) -> Deployments:
        """No workflow deployed (nothing loaded); the operator's deployed-only rule still holds."""
        return cls(only=settings.deployed_workflows_only)

    def trusted(self) -> Deployments:
        """The same workflows for the operator's own jobs (the warm-up), which may send graphs."""
        return replace(self, only=False)

    def get(self, workflow_id: str) -> Deployed:
        """The workflow a request names; INVALID_INPUT for an unknown id, the start-up reason for a broken one."""
        if workflow_id in self.ready:
            return self.ready[workflow_id]
        err = self.unavailable.get(workflow_id)
        if err is not None:
            raise WorkerError(err.code, f"the deployed workflow {workflow_id!r} is unavailable on this worker: "
                              f"{err.message}", {**err.details, "workflow_id": workflow_id})
        known = sorted(self.ready)
        close = closest(workflow_id, known)
        hint = f"did you mean {close!r}?" if close else (f"deployed: {', '.join(known[:20])}" if known else
                                                          "no workflow is deployed on this worker")
        raise invalid_input("workflow_id", f"no deployed workflow is called {workflow_id!r}; {hint}",
                            message=f"workflow_id: no deployed workflow is called {workflow_id!r}; {hint} (a job "
                            "with {\"list_workflows\": true} lists them)")

    def catalogue(self, timings: dict[str, float]) -> dict[str, Any]:
        """The answer to `list_workflows`: every workflow with its JSON Schema, version and description."""
        answer = WorkflowCatalogue(
            workflows=[DeployedWorkflow(id=d.id, version=d.version, description=d.description,
                                        params_schema=d.params_schema) for d in self.ready.values()],
            unavailable=[UnavailableWorkflow(id=i, code=e.code, reason=e.payload()["message"])
                         for i, e in self.unavailable.items()],
            deployed_only=self.only, timings=timings)
        return answer.model_dump(mode="json")


def load_deployments(settings: Settings, comfy: ComfyConnection) -> Deployments:
    """Read the deployment folders and check every workflow against the live catalogue. Never raises: a
    broken workflow is logged and refused by name, the rest serve."""
    started = time.monotonic()
    sources, unreadable = read_folders(deployment_folders(settings))
    found = Deployments.none(settings)
    found.unavailable = {u.id: u.error for u in unreadable}
    if sources:
        _check_all(found, sources, settings, comfy)
    found.seconds = round(time.monotonic() - started, 3)
    for workflow_id, err in found.unavailable.items():
        log.error("deployed workflow %r is unavailable (requests naming it get %s): %s", workflow_id,
                  err.code.value, err.message)
    for deployed in found.ready.values():
        for note in deployed.notes:
            log.warning("deployed workflow %r: %s", deployed.id, note)
    if found.ready or found.unavailable:
        log.info("deployed workflows: %d ready (%s), %d unavailable, checked in %.3f s", len(found.ready),
                 ", ".join(f"{d.id}@{d.version}" for d in found.ready.values()), len(found.unavailable),
                 found.seconds)
    return found


def _check_all(found: Deployments, sources: list[Source], settings: Settings, comfy: ComfyConnection) -> None:
    try:
        catalogue, models, files = comfy.catalogue(), comfy.model_lists(), comfy.input_files()
    except WorkerError as err:
        for source in sources:
            found.unavailable[source.id] = err
        return
    policy = Policy.from_settings(settings, job_folder=f"{JOBS_SUBFOLDER}/deployment-check")
    for source in sources:
        try:
            found.ready[source.id] = check_deployment(
                source, catalogue, models=models, input_files=files, policy=policy,
                fetchable=lambda missing: on_demand_entries(missing, settings) is not None)
        except WorkerError as err:
            found.unavailable[source.id] = err
        except Exception as exc:  # a bug in one check must not keep the other workflows from serving
            log.exception("checking deployed workflow %r failed", source.id)
            what = f"its start-up check failed ({type(exc).__name__})"
            found.unavailable[source.id] = broken(what, [file_problem("check_failed", what)])
