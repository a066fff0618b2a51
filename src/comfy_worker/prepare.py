"""Resolve and pre-flight: a job's graphs built, made final (outputs isolated, inputs named) and checked,
before any upload or GPU time. Model files the request names by URL are fetched first (into the model cache) and
the graphs pointed at them; missing models that models.yaml lists as on-demand are fetched on the way, so the
check runs once more only for the model lists."""

from __future__ import annotations

import json
from typing import Any

from .comfy import ComfyConnection
from .errors import WorkerError, invalid_input
from .media.staging import StagingPlan, plan_staging
from .models.on_demand import fetch_on_demand, may_fetch_on_demand, on_demand_entries
from .models.requested import JobModels
from .schema import JobInput
from .settings import Settings
from .timings import Timings
from .workflow import Policy, ResolvedWorkflow, build_workflow, check_workflow, for_each_item, isolate_outputs
from .workflow.model_urls import URL_PREFIXES, plan_model_urls, with_model_names

# Graphs up to this many nodes are checked on the event loop when nothing needs I/O: a small graph checks in
# about 0.3 ms, less than a hand-off to a thread and back costs on a busy CPU.
INLINE_NODES = 64

__all__ = ["JobModels", "prepare"]


def in_memory(request: JobInput, comfy: ComfyConnection, settings: Settings) -> bool:
    """Whether `prepare` needs nothing but memory: ComfyUI's lists cached, no model to fetch (no `models`, no
    URL anywhere in the graph or inputs, no on-demand download), and a small graph."""
    workflow = request.workflow or {}
    nodes = workflow.get("nodes")
    if not comfy.lists_cached() or request.models or may_fetch_on_demand(settings) or \
            (len(nodes) if isinstance(nodes, list) else len(workflow)) > INLINE_NODES:
        return False
    text = json.dumps([workflow, request.inputs], default=str)
    return not any(prefix in text for prefix in URL_PREFIXES)


def prepare(request: JobInput, comfy: ComfyConnection, settings: Settings, models: JobModels, *, folder: str,
            token: str, timings: Timings) -> tuple[list[ResolvedWorkflow], StagingPlan | None]:
    """The graphs to submit (one per input set) and the job's staging plan (None for a dry run). One error
    names every failing input set of a batch. `models` holds the files named by URL until the job ends."""
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
    fetched = _fetch_models(request, sets, built, comfy, settings, models, timings, staged=staged, folder=folder)
    if good:
        _check(good, catalogue, comfy, settings, staged, fetch=not config.dry_run, timings=timings, folder=folder,
               fetched=fetched)
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


def _fetch_models(request: JobInput, sets: list[dict[str, Any] | None], built: list[ResolvedWorkflow | WorkerError],
                  comfy: ComfyConnection, settings: Settings, models: JobModels, timings: Timings, *,
                  staged: list[str], folder: str) -> dict[str, list[str]]:
    """Fetch the model files the request names by URL (a dry run: look them up) and point each graph's loader
    inputs at them; the names pre-flight is to see, by folder (a dry run fetched nothing, and ComfyUI's lists
    may be a moment old). A workflow that would fail for any other reason fails before the download."""
    good = [(i, r) for i, r in enumerate(built) if isinstance(r, ResolvedWorkflow)]
    refs = plan_model_urls(request.models, [r.graph for _, r in good], [sets[i] or {} for i, _ in good],
                           comfy.catalogue(), comfy.model_lists())
    if not refs:
        return {}
    dry_run = request.execution_config.dry_run
    if not dry_run:
        named: dict[str, list[str]] = {}
        for ref in refs:  # the values the graphs hold now stand for the files to come
            named.setdefault(ref.folder, []).extend(good[item][1].graph[node]["inputs"][name]
                                                    for item, node, name in ref.uses)
        _check([r for _, r in good], comfy.catalogue(), comfy, settings, staged, fetch=False, timings=timings,
               folder=folder, fetched=named)
        for_each_item([r for _, r in good], _checked_but_models)
    with timings.stage("fetch_models"):
        fetched = models.fetch(refs, settings, dry_run=dry_run)
    names: dict[int, dict[tuple[str, str], str]] = {}
    present: dict[str, list[str]] = {}
    for ref, got in zip(refs, fetched):
        if got.name is None:
            continue
        present.setdefault(ref.folder, []).append(got.name)
        for item, node_id, input_name in ref.uses:
            names.setdefault(item, {})[(node_id, input_name)] = got.name
    for item, (_, resolved) in enumerate(good):
        resolved.graph = with_model_names(resolved.graph, names.get(item, {}))
        resolved.models = [got.plan() for got in fetched] if dry_run else []
    comfy.forget_model_lists()
    return present


def _check(built: list[ResolvedWorkflow], catalogue: dict[str, Any], comfy: ComfyConnection, settings: Settings,
           staged: list[str], *, fetch: bool, timings: Timings, folder: str, fetched: dict[str, list[str]]) -> None:
    policy = Policy.from_settings(settings, job_folder=folder)
    for attempt in range(2):
        lists = comfy.model_lists()
        lists = {**lists, **{f: sorted({*lists.get(f, []), *names}) for f, names in fetched.items()}}
        reports = [check_workflow(r, catalogue, models=lists, policy=policy,
                                  input_files=comfy.input_files(), staged_files=staged) for r in built]
        missing = [m for report in reports if report.only_missing_models for m in report.missing_models]
        entries = on_demand_entries(missing, settings) if fetch and attempt == 0 else None
        if not entries:
            return
        with timings.stage("fetch_models"):
            fetch_on_demand(entries, settings)
        comfy.forget_model_lists()


def _checked_but_models(item: ResolvedWorkflow) -> ResolvedWorkflow:
    """A graph whose check found nothing wrong but missing models (on-demand ones come after the download)."""
    assert item.report is not None
    if not item.report.only_missing_models:
        item.report.raise_for_errors()
    return item


def _checked(item: ResolvedWorkflow | WorkerError) -> ResolvedWorkflow:
    """A built graph whose check passed; its build error or its check's error otherwise."""
    if isinstance(item, WorkerError):
        raise item
    assert item.report is not None
    item.report.raise_for_errors()
    return item
