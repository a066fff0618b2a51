"""Resolve and pre-flight: a job's graphs built, made final (outputs isolated, inputs named) and checked,
before any upload or GPU time. Missing models that models.yaml lists as on-demand are fetched on the way,
so the check runs once more only for the model lists."""

from __future__ import annotations

from typing import Any

from .comfy import ComfyConnection
from .errors import WorkerError, invalid_input
from .media.staging import StagingPlan, plan_staging
from .models.on_demand import fetch_on_demand, on_demand_entries
from .schema import JobInput
from .settings import Settings
from .timings import Timings
from .workflow import Policy, ResolvedWorkflow, build_workflow, check_workflow, for_each_item, isolate_outputs


def prepare(request: JobInput, comfy: ComfyConnection, settings: Settings, *, folder: str, token: str,
            timings: Timings) -> tuple[list[ResolvedWorkflow], StagingPlan | None]:
    """The graphs to submit (one per input set) and the job's staging plan (None for a dry run). One error
    names every failing input set of a batch."""
    catalogue = comfy.catalogue()
    config = request.execution_config
    sets = request.inputs if isinstance(request.inputs, list) else [request.inputs]
    if len(sets) > settings.max_batch_size:
        raise invalid_input("inputs", f"{len(sets)} sets given",
                            message=f"inputs: at most {settings.max_batch_size} input sets in one batch")
    built: list[ResolvedWorkflow | WorkerError] = []
    for item in sets:
        try:
            built.append(build_workflow(request.workflow, catalogue, inputs=item, randomize=config.randomize_seeds,
                                        output_nodes=config.output_nodes))
        except WorkerError as err:
            built.append(err)
    good = [r for r in built if isinstance(r, ResolvedWorkflow)]
    plan = None if config.dry_run else _finalize(good, request, comfy, folder, token)
    if plan is not None and len(plan.requests) > settings.max_input_images:
        # Every file staged counts, from `images`, from `inputs` and from every input set of a batch.
        raise invalid_input("inputs", f"{len(plan.requests)} media inputs, limit {settings.max_input_images}",
                            message=f"the job stages {len(plan.requests)} media inputs (images and media in "
                            f"inputs, all batch items); the limit is {settings.max_input_images} (MAX_INPUT_IMAGES)")
    staged = [r.reference for r in plan.requests] if plan else [image.name for image in request.images]
    if good:
        _check(good, catalogue, comfy, settings, staged, fetch=not config.dry_run, timings=timings, folder=folder)
    if config.dry_run and len(good) == len(built):
        return good, None  # a dry run's answer is the report, problems included
    return for_each_item(built, _checked), plan


def _finalize(built: list[ResolvedWorkflow], request: JobInput, comfy: ComfyConnection, folder: str,
              token: str) -> StagingPlan:
    catalogue = comfy.catalogue()
    plan = plan_staging(request.images, [r.graph for r in built], [r.media for r in built], folder,
                        request.param_names)
    for resolved, graph in zip(built, plan.graphs):
        resolved.graph = isolate_outputs(graph, folder, token, catalogue)
        resolved.media = []  # staged under the names the graph now holds
    return plan


def _check(built: list[ResolvedWorkflow], catalogue: dict[str, Any], comfy: ComfyConnection, settings: Settings,
           staged: list[str], *, fetch: bool, timings: Timings, folder: str) -> None:
    policy = Policy.from_settings(settings, job_folder=folder)
    for attempt in range(2):
        reports = [check_workflow(r, catalogue, models=comfy.model_lists(), policy=policy,
                                  input_files=comfy.input_files(), staged_files=staged) for r in built]
        missing = [m for report in reports if report.only_missing_models for m in report.missing_models]
        entries = on_demand_entries(missing, settings) if fetch and attempt == 0 else None
        if not entries:
            return
        with timings.stage("fetch_models"):
            fetch_on_demand(entries, settings)
        comfy.forget_model_lists()


def _checked(item: ResolvedWorkflow | WorkerError) -> ResolvedWorkflow:
    """A built graph whose check passed; its build error or its check's error otherwise."""
    if isinstance(item, WorkerError):
        raise item
    assert item.report is not None
    item.report.raise_for_errors()
    return item
