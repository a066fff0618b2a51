"""The path of one job, start to finish: parse, stage, submit, follow, collect, deliver, finish."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .comfy.client import ComfyUnavailable, PromptRejected
from .comfy.events import COMFY_EXITED, RECONNECTED, Inbox
from .comfy.failures import history_error, node_label, out_of_memory_again, rejected_error
from .comfy.runtime import ComfyRuntime
from .delivery import DeliveryContext, deliver_outputs
from .delivery.s3 import s3_target
from .errors import ErrorCode, WorkerError
from .image.volume import model_download_root
from .media.outputs import Collected, FileRef, collect_outputs, local_path
from .media.staging import MediaRequest, check_images, fetch_media, rewrite_references, upload_files
from .models.download import DownloadError, ensure_models, options_from_settings
from .models.manifest import FetchWhen, load_manifest
from .progress import BatchProgress, ProgressTracker, Sender
from .schema import JobInput, JobResult, parse_job_input
from .settings import Settings
from .workflow import Policy, ResolvedWorkflow, expand_batch, resolve_workflow, set_media_name

log = logging.getLogger("comfy_worker.job")

# An input no node declares: ComfyUI ignores it when running the node but counts it in the node's cache
# key, so output nodes re-run for every job while everything upstream stays cached.
JOB_MARKER_INPUT = "_worker_job"
JOBS_SUBFOLDER = "worker-jobs"
# Graphs up to this many nodes are checked on the event loop when no I/O is needed (200 nodes: ~2 ms).
INLINE_PREFLIGHT_NODES = 64
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


class Timings:
    """Seconds per stage; each finished stage is one structured log line carrying the job id."""

    def __init__(self, job_id: str = "") -> None:
        self.job_id = job_id
        self.values: dict[str, float] = {}
        self._start = time.monotonic()

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        outcome = "failed"
        try:
            yield
            outcome = "ok"
        finally:
            seconds = time.monotonic() - started
            self.values[name] = round(self.values.get(name, 0.0) + seconds, 4)
            log.info("job=%s stage=%s outcome=%s seconds=%.4f", self.job_id, name, outcome, seconds)

    def total(self) -> dict[str, float]:
        return {**self.values, "total": round(time.monotonic() - self._start, 4)}


@dataclass
class PromptRun:
    """One prompt of a job (a batch has one per input set), and what it has touched in ComfyUI, so it can
    be stopped and cleaned up whatever happens."""

    index: int
    token: str
    resolved: ResolvedWorkflow
    prompt_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    submitted: bool = False
    finished: bool = False
    entry: dict[str, Any] | None = None
    error: WorkerError | None = None
    temp_files: list[FileRef] = field(default_factory=list)

    attempts: list[str] = field(default_factory=list)  # earlier prompt ids of this run (out-of-memory retry)

    @property
    def graph(self) -> dict[str, Any]:
        return self.resolved.graph

    def retry(self) -> None:
        """Run the same graph again under a new prompt id; the old one is kept for cleanup."""
        self.attempts.append(self.prompt_id)
        self.prompt_id = str(uuid.uuid4())
        self.submitted = self.finished = False
        self.entry = None
        self.error = None

    @property
    def subfolder(self) -> str:
        return f"{JOBS_SUBFOLDER}/{self.token}"


def _graph_size(workflow: dict[str, Any]) -> int:
    nodes = workflow.get("nodes")
    return len(nodes) if isinstance(nodes, list) else len(workflow)


def _summary(result: dict[str, Any]) -> str:
    """The outputs of a result as one short log item each (never their data or URLs)."""
    items = []
    for entry in result.get("outputs", []):
        size = f" {entry['width']}x{entry['height']}" if entry.get("width") else ""
        where = entry.get("storage") or ("inline" if "data" in entry else "text")
        items.append(f"{entry.get('node_id')}:{entry.get('kind')}{size} {entry.get('filename') or ''} "
                     f"{entry.get('size')}B {where}".replace("  ", " "))
    return "[" + ", ".join(items) + "]"


def new_token(job_id: str) -> str:
    return f"{_UNSAFE.sub('_', job_id)[:40]}-{uuid.uuid4().hex[:8]}"


# ------------------------------------------------------------------------------------------------
# Graph preparation


def mark_outputs(workflow: dict[str, Any], run: PromptRun, output_classes: set[str]) -> None:
    """Make every output of this job unique: files go to the job's own subfolder, and output nodes carry
    the job marker so ComfyUI's cache never replays another job's (possibly deleted) files. Only output
    nodes are touched, so loaded models and encoded prompts upstream stay cached between jobs."""
    for node in workflow.values():
        if node.get("class_type") not in output_classes:
            continue
        inputs = node.setdefault("inputs", {})
        prefix = inputs.get("filename_prefix")
        if isinstance(prefix, str):
            inputs["filename_prefix"] = f"{run.subfolder}/{prefix.lstrip('/') or 'ComfyUI'}"
        inputs[JOB_MARKER_INPUT] = run.token


def _dry_item(resolved: ResolvedWorkflow) -> dict[str, Any]:
    assert resolved.report is not None
    return {"workflow": resolved.graph, "preflight": resolved.report.to_dict(),
            "media_inputs": [{"node_id": m.node_id, "input_name": m.input_name, "key": m.key}
                             for m in resolved.media],
            "seeds": resolved.seeds}


def dry_run_result(resolved: list[ResolvedWorkflow], batch: bool, warnings: list[str]) -> dict[str, Any]:
    """What a dry run returns: the graph ComfyUI would get and the pre-flight report; nothing is run."""
    if batch:
        return {"dry_run": True, "items": [{"index": i, **_dry_item(r)} for i, r in enumerate(resolved)],
                "warnings": warnings}
    return {"dry_run": True, **_dry_item(resolved[0]), "warnings": warnings}


# ------------------------------------------------------------------------------------------------
# The pipeline


class Job:
    """One job against one ComfyRuntime."""

    def __init__(self, job: dict[str, Any], runtime: ComfyRuntime, settings: Settings, send_progress: Sender) -> None:
        self.raw = job
        self.job_id = str(job.get("id", "unknown"))
        self.runtime = runtime
        self.settings = settings
        self.send_progress = send_progress
        self.timings = Timings(self.job_id)
        self.token = new_token(self.job_id)
        self.runs: list[PromptRun] = []
        self.warnings: list[str] = []
        self._catalogue: dict[str, Any] = {}
        self.request: JobInput | None = None
        self._unsettled: list[str] = []
        self._scratch: Path | None = None  # copies of outputs fetched from /view (ComfyUI not local)

    @property
    def staging_folder(self) -> str:
        """The job's subfolder of ComfyUI's input folder (shared by the prompts of a batch)."""
        return f"{JOBS_SUBFOLDER}/{self.token}"

    async def run(self) -> dict[str, Any]:
        """The job's result dict for the runpod SDK: `output` on success, `error` (a JSON string) on failure."""
        try:
            timeout = self._timeout()
            try:
                result = await asyncio.wait_for(self._run(), timeout) if timeout else await self._run()
            except asyncio.TimeoutError:
                raise await self._timed_out(timeout) from None
            log.info("job=%s outcome=completed seconds=%.3f outputs=%s", self.job_id, result["timings"]["total"],
                     _summary(result))
            return result
        except WorkerError as err:
            log.warning("job=%s outcome=failed code=%s message=%s", self.job_id, err.code.value, err.message)
            out: dict[str, Any] = {"error": err.to_error_string(self.job_id, self.timings.total())}
            if err.refresh_worker:
                out["refresh_worker"] = True
            return out
        except asyncio.CancelledError:
            log.warning("job=%s outcome=cancelled", self.job_id)
            self._abort(False)
            raise
        except Exception as exc:  # a bug must still reach the caller as a structured error, never a traceback
            log.exception("job=%s outcome=failed code=INTERNAL_ERROR", self.job_id)
            self._abort(False)
            err = WorkerError(ErrorCode.INTERNAL_ERROR, f"unexpected error in the worker ({type(exc).__name__}); "
                              "the job was stopped", {"exception_type": type(exc).__name__})
            return {"error": err.to_error_string(self.job_id, self.timings.total())}
        finally:
            # The caller gets the result now; staged files, outputs and history go right after.
            self.runtime.schedule_cleanup(self._cleanup)

    def _timeout(self) -> float | None:
        raw = self.raw.get("input")
        requested = None
        if isinstance(raw, dict) and isinstance(raw.get("execution_config"), dict):
            value = raw["execution_config"].get("timeout")
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
                requested = float(value)
        timeout = requested or self.settings.job_timeout
        ceiling = self.settings.job_timeout_max
        if timeout and ceiling and timeout > ceiling:
            self.warnings.append(f"execution_config.timeout {timeout:g} s lowered to the worker's limit of "
                                 f"{ceiling:g} s")
            timeout = ceiling
        return timeout

    async def _timed_out(self, timeout: float) -> WorkerError:
        restarted = await asyncio.to_thread(self._abort, True)
        return WorkerError(ErrorCode.TIMEOUT, f"the job did not finish within {timeout:g} s; its prompt was "
                           "stopped" + (" and ComfyUI restarted" if restarted else ""),
                           {"timeout": timeout, "prompt_ids": [r.prompt_id for r in self.runs if r.submitted],
                            "comfyui_restarted": restarted})

    async def _run(self) -> dict[str, Any]:
        t = self.timings
        with t.stage("parse"):
            request = parse_job_input(self.raw.get("input"), max_depth=self.settings.max_input_depth,
                                      max_nodes=self.settings.max_workflow_nodes)
            self.request = request
            check_images(request.images, max_count=self.settings.max_input_images)
        batch = isinstance(request.inputs, list)
        with t.stage("wait_comfyui"):
            await self.runtime.ensure_ready_async()
        with t.stage("preflight"):
            names = [image.name for image in request.images]
            if self.runtime.lists_cached() and _graph_size(request.workflow) <= INLINE_PREFLIGHT_NODES:
                # Everything it needs is in memory and a small graph checks in well under a millisecond:
                # a hand-off to a thread would cost more than the check.
                resolved = self._resolve(request, names)
            else:
                resolved = await asyncio.to_thread(self._resolve, request, names)
        if request.execution_config.dry_run:
            result = dry_run_result(resolved, batch, self.warnings)
            result["timings"] = t.total()
            return result
        self.runs = [PromptRun(i, f"{self.token}-{i}" if batch else self.token, r) for i, r in enumerate(resolved)]
        if request.images or any(run.resolved.media for run in self.runs):
            with t.stage("stage_inputs"):
                await asyncio.to_thread(self._stage, request)
        classes = self.runtime.output_classes()
        for run in self.runs:
            mark_outputs(run.graph, run, classes)
        await self._execute(batch)
        if not batch and self.runs[0].error:
            raise self.runs[0].error
        # Outputs are read, encoded and delivered on a thread: files of any size never stall the event loop,
        # where other jobs and the SDK's own job-take and stop polling run.
        result = await asyncio.to_thread(self._finish, request, batch)
        result["timings"] = t.total()
        return result

    # --- resolve and stage --------------------------------------------------------------------------
    def _resolve(self, request: JobInput, image_names: list[str]) -> list[ResolvedWorkflow]:
        """Convert, apply inputs, randomise seeds and pre-flight every graph: before any upload or GPU time."""
        self._catalogue = self.runtime.catalogue()
        workflow = request.workflow  # each attempt below resolves its own copy

        def attempt() -> list[ResolvedWorkflow]:
            options: dict[str, Any] = dict(
                randomize=request.execution_config.randomize_seeds,
                output_nodes=request.execution_config.output_nodes, models=self.runtime.model_lists(),
                policy=Policy.from_settings(self.settings), input_files=self.runtime.input_files(),
                staged_files=image_names,
                # A dry run's answer is the report itself, problems included; nothing is raised for them.
                check=not request.execution_config.dry_run)
            if isinstance(request.inputs, list):
                if len(request.inputs) > self.settings.max_batch_size:
                    raise WorkerError(ErrorCode.INVALID_INPUT, f"inputs: at most {self.settings.max_batch_size} "
                                      "input sets in one batch",
                                      {"errors": [{"field": "inputs", "problem": f"{len(request.inputs)} sets given"}]})
                return expand_batch(copy.deepcopy(workflow), request.inputs, self._catalogue, **options)
            return [resolve_workflow(copy.deepcopy(workflow), self._catalogue, inputs=request.inputs, **options)]

        try:
            return attempt()
        except WorkerError as err:
            if (err.code is not ErrorCode.MISSING_MODELS or request.execution_config.dry_run
                    or not self._fetch_on_demand(err)):
                raise
        return attempt()

    def _fetch_on_demand(self, err: WorkerError) -> bool:
        """Download missing models that models.yaml lists as `on_demand`; True when all of them were."""
        if not self.settings.model_download_on_demand:
            return False
        manifest = load_manifest(self.settings.models_manifest, missing_ok=True)
        missing = list(err.details.get("missing_models", []))
        for item in err.details.get("items", []):
            missing += item.get("details", {}).get("missing_models", [])
        entries = {}
        for model in missing:
            entry = manifest.lookup(str(model.get("folder")), str(model.get("file")))
            if entry is None or entry.fetch is not FetchWhen.ON_DEMAND:
                return False
            entries[(entry.folder, entry.filename)] = entry
        if not entries:
            return False
        log.info("job=%s fetching %d on-demand model(s): %s", self.job_id, len(entries),
                 ", ".join(e.filename for e in entries.values()))
        with self.timings.stage("fetch_models"):
            try:
                ensure_models(list(entries.values()), model_download_root(self.settings),
                              options=options_from_settings(self.settings))
            except DownloadError as exc:
                raise exc.to_worker_error() from None
        self.runtime.forget_model_lists()
        return True

    def _stage(self, request: JobInput) -> None:
        """Fetch every input (after the pre-flight, so a bad graph costs no download) and upload it into
        this job's own subfolder of ComfyUI's input folder. Only called when the job has inputs."""
        wanted = [MediaRequest(f"images[{i}].image", image.image, image.name) for i, image in enumerate(request.images)]
        slots = [(run, slot) for run in self.runs for slot in run.resolved.media]
        prefix = "inputs" if len(self.runs) == 1 else "inputs[{}]"
        wanted += [MediaRequest(f"{prefix.format(run.index)}.{slot.key}", slot.value, None, "any")
                   for run, slot in slots]
        s3_defaults = s3_target(self.settings, self.raw.get("s3Config"), require_bucket=False)
        files = fetch_media(wanted, settings=self.settings, s3_defaults=s3_defaults,
                            max_total=self.settings.max_input_total_bytes)
        staged = upload_files(self.runtime.client, files, self.staging_folder)
        count = len(request.images)
        for run in self.runs:
            rewrite_references(run.graph, staged[:count])
        for (run, slot), item in zip(slots, staged[count:]):
            set_media_name(run.graph, slot, item.reference)

    # --- submit and follow ------------------------------------------------------------------------
    async def _execute(self, batch: bool) -> None:
        """Run every prompt of the job; a prompt that ran out of GPU memory is run once more after ComfyUI
        has freed its memory (models unloaded, caches dropped), unless the operator or request says not to."""
        progress = BatchProgress(len(self.runs), self.send_progress)
        await self._run_prompts(self.runs, batch, progress)
        short = [run for run in self.runs if run.error is not None and run.error.code is ErrorCode.OUT_OF_MEMORY]
        if not short or not self._retry_on_oom():
            return
        log.warning("job=%s %d prompt(s) ran out of GPU memory; freeing ComfyUI's memory and running them again",
                    self.job_id, len(short))
        with self.timings.stage("free_memory"):
            freed = await asyncio.to_thread(self._free_memory)
        for run in short:
            run.retry()
        await self._run_prompts(short, batch, progress)
        for run in short:
            if run.error is not None and run.error.code is ErrorCode.OUT_OF_MEMORY:
                run.error = out_of_memory_again(run.error, freed, run.attempts)
            elif run.error is None:
                self.warnings.append(f"{'item ' + str(run.index) + ' ' if batch else ''}ran out of GPU memory "
                                     "once; it completed after ComfyUI's memory was freed")

    def _retry_on_oom(self) -> bool:
        assert self.request is not None
        choice = self.request.execution_config.retry_on_oom
        return self.settings.oom_retry if choice is None else choice

    def _free_memory(self) -> bool:
        try:
            self.runtime.client.free(unload_models=True, free_memory=True)
        except ComfyUnavailable as exc:
            log.warning("job=%s could not free ComfyUI's memory: %s", self.job_id, exc)
            return False
        return True

    async def _run_prompts(self, runs: list[PromptRun], batch: bool, progress: BatchProgress) -> None:
        """Queue the prompts together (models stay loaded between them) and follow each to its end."""
        loop = asyncio.get_running_loop()
        events = self.runtime.events
        inboxes = {run.prompt_id: events.subscribe(run.prompt_id, loop) for run in runs}
        try:
            with self.timings.stage("submit"):
                for run in runs:
                    try:
                        await asyncio.to_thread(self._submit, run)
                    except WorkerError as err:
                        if not batch or err.code is ErrorCode.COMFYUI_UNAVAILABLE:
                            raise
                        run.error = err
            with self.timings.stage("execute"):
                followers = [self._follow(run, inboxes[run.prompt_id],
                                          ProgressTracker(run.graph, run.prompt_id, progress.sender(run.index)))
                             for run in runs if run.submitted]
                outcomes = await asyncio.gather(*followers, return_exceptions=True)
            for outcome in outcomes:
                if isinstance(outcome, BaseException) and not isinstance(outcome, WorkerError):
                    raise outcome
            for run in runs:
                if run.error is None and run.entry is not None:
                    run.error = history_error(run.entry, run.graph)
            failures = [o for o in outcomes if isinstance(o, WorkerError)]
            # A ComfyUI that died or hung takes the whole job down: nothing of it can be trusted.
            fatal = [f for f in failures if f.code in {ErrorCode.COMFYUI_UNAVAILABLE, ErrorCode.TIMEOUT}]
            if fatal:
                raise fatal[0]
        finally:
            for prompt_id in inboxes:
                events.unsubscribe(prompt_id)

    def _submit(self, run: PromptRun) -> None:
        events = self.runtime.events
        try:
            answer = self.runtime.client.queue_prompt(run.graph, client_id=events.client_id, prompt_id=run.prompt_id,
                                                      partial_execution_targets=run.resolved.output_nodes)
        except PromptRejected as exc:
            raise rejected_error(exc.body, run.graph) from None
        except ComfyUnavailable as exc:
            raise self.runtime.unavailable(f"ComfyUI did not accept the prompt: {exc}") from exc
        run.submitted = True
        if answer.get("node_errors"):
            # Valid branches still run; the broken ones are named so nothing is lost silently.
            bad = rejected_error({"node_errors": answer["node_errors"]}, run.graph)
            self.warnings.append(f"some output branches were skipped: {bad.message}")

    async def _follow(self, run: PromptRun, inbox: Inbox, tracker: ProgressTracker) -> None:
        poll = self.settings.history_poll_interval
        stall = self.settings.stall_timeout
        terminal_seen = False
        last_news = time.monotonic()
        while True:
            events = await inbox.next_batch(0.5 if terminal_seen else poll)
            if not events:
                # No news: the websocket may have lost the end of the prompt. /history is the truth.
                if await self._finished(run):
                    return
                if not self.runtime.is_alive():
                    raise self.runtime.unavailable("ComfyUI stopped while running the job", prompt_id=run.prompt_id)
                if stall and tracker.stage == "running" and time.monotonic() - last_news > stall:
                    restarted = await asyncio.to_thread(self._abort, True)
                    raise WorkerError(ErrorCode.TIMEOUT, f"ComfyUI made no progress for {stall:g} s while running "
                                      f"{node_label(run.graph, tracker.node or '?')}; the prompt was "
                                      "stopped" + (" and ComfyUI restarted" if restarted else ""),
                                      {"stalled": True, "stall_timeout": stall, "node_id": tracker.node,
                                       "comfyui_restarted": restarted})
                continue
            last_news = time.monotonic()
            for event in events:
                if event.type == COMFY_EXITED:
                    raise self.runtime.unavailable(
                        f"ComfyUI exited (code {event.data.get('exit_code')}) while running the job; it is being "
                        "restarted", prompt_id=run.prompt_id)
                if event.type == RECONNECTED:
                    if await self._finished(run):
                        return
                    continue
                tracker.on_event(event)
                if event.type in {"execution_success", "execution_error", "execution_interrupted"}:
                    terminal_seen = True
                elif event.type == "executing" and event.data.get("node") is None:
                    if event.data.get("history") is not None:
                        run.entry, run.finished = event.data["history"], True
                        return
                    if await self._finished(run, retries=20):
                        return
                    terminal_seen = True

    async def _finished(self, run: PromptRun, retries: int = 1) -> bool:
        """Whether ComfyUI has written the prompt's history entry (it does so once the prompt ends)."""
        for attempt in range(retries):
            try:
                entry = await asyncio.to_thread(self.runtime.client.history, run.prompt_id)
            except ComfyUnavailable:
                entry = None
            if entry is not None:
                run.entry = entry
                run.finished = True
                return True
            if attempt + 1 < retries:
                await asyncio.sleep(0.05)
        return False

    # --- outputs ------------------------------------------------------------------------------------
    def _locate(self, ref: FileRef) -> Path:
        """The file of an output: ComfyUI's own when its folders are local, else a copy streamed from `/view`
        into the job's scratch folder. Either way the bytes are read from disk when needed, never all held."""
        if self.runtime.local_files:
            try:
                path = local_path(ref, self.runtime.folders)
                if path.is_file():
                    return path
            except (ValueError, KeyError, OSError):
                pass
        if self._scratch is None:
            self._scratch = Path(tempfile.mkdtemp(prefix=f"comfy-worker-{self.token}-"))
        target = self._scratch / f"{len(list(self._scratch.iterdir()))}-{Path(ref.filename).name}"
        self.runtime.client.view_to(ref.filename, ref.subfolder, ref.type, target)
        return target

    def _collect(self, run: PromptRun, request: JobInput) -> Collected:
        assert run.entry is not None
        include_temp = request.output_config.include_temp
        if include_temp is None:
            include_temp = self.settings.include_temp_outputs
        outputs = run.entry.get("outputs") or {}
        collected = collect_outputs(outputs, include_temp=include_temp, locate=self._locate)
        # Temp files are removed after the job whether or not they were asked for.
        run.temp_files.extend(collected.temp_files)
        self.warnings.extend(collected.warnings)
        if not collected.outputs:
            self.warnings.append("the workflow produced no outputs"
                                 + (f" ({collected.skipped_temp} temporary outputs not requested)"
                                    if collected.skipped_temp else ""))
        # Every file must be readable before anything is reported: a missing one fails the job.
        missing = []
        for item in collected.outputs:
            if item.ref is None:
                continue
            try:
                item.size()
            except (OSError, ComfyUnavailable) as exc:
                missing.append({"node_id": item.node_id, "filename": item.ref.filename,
                                "subfolder": item.ref.subfolder, "type": item.ref.type, "reason": str(exc)})
        if missing:
            raise WorkerError(ErrorCode.OUTPUT_MISSING,
                              f"{len(missing)} output file(s) reported by ComfyUI could not be read",
                              {"missing": missing})
        return collected

    def _deliver(self, collected: list[tuple[PromptRun, Collected]]) -> dict[str, Any]:
        """Deliver every output of the job in one go (one size budget, one storage target)."""
        assert self.request is not None
        outputs = [item for _, c in collected for item in c.outputs]
        owners = [run for run, c in collected for _ in c.outputs]
        ctx = DeliveryContext(job_id=self.job_id, prompt_id=collected[0][0].prompt_id)
        delivered = deliver_outputs(ctx, outputs, self.request.output_config, self.raw.get("s3Config"),
                                    self.settings)
        if len(delivered.entries) != len(outputs):
            raise WorkerError(ErrorCode.INTERNAL_ERROR, "delivery returned a different number of outputs",
                              {"outputs": len(outputs), "delivered": len(delivered.entries)})
        self.warnings.extend(delivered.warnings)
        batch = len(self.runs) > 1
        entries = [e.model_copy(update={"item": run.index}) if batch else e
                   for e, run in zip(delivered.entries, owners)]
        result = JobResult(prompt_id=self.runs[0].prompt_id, outputs=entries, images=delivered.images,
                           timings={}, warnings=self.warnings)
        out = result.model_dump(mode="json", exclude_none=True)
        seeds = {run.index: run.resolved.seeds for run in self.runs if run.resolved.seeds}
        if seeds:
            out["seeds"] = seeds[0] if not batch else {str(k): v for k, v in seeds.items()}
        return out

    def _finish(self, request: JobInput, batch: bool) -> dict[str, Any]:
        """Collect and deliver every prompt that succeeded; a failed batch item never loses the others'
        outputs. A single job is a batch of one without the `items` list."""
        done: list[tuple[PromptRun, Collected]] = []
        with self.timings.stage("collect"):
            for run in self.runs:
                if run.error is None:
                    try:
                        done.append((run, self._collect(run, request)))
                    except WorkerError as err:
                        if not batch:
                            raise
                        run.error = err
        failed = [run for run in self.runs if run.error is not None]
        items_failed = [{"index": r.index, "prompt_id": r.prompt_id, **r.error.payload()} for r in failed
                        if r.error is not None]
        if not done:
            first = failed[0].error
            assert first is not None
            raise WorkerError(first.code, f"all {len(self.runs)} items of the batch failed; item 0: {first.message}",
                              {"items": items_failed}, refresh_worker=any(r.error.refresh_worker for r in failed
                                                                           if r.error))
        with self.timings.stage("deliver"):
            result = self._deliver(done)
        if not batch:
            return result
        for item in items_failed:
            result["warnings"].append(f"item {item['index']} failed: {item['code']}: {item['message']}")
        result["items"] = [{"index": r.index, "prompt_id": r.prompt_id,
                            "status": "FAILED" if r.error else "COMPLETED",
                            **({"error": r.error.payload()} if r.error else {})} for r in self.runs]
        return result

    # --- abort and cleanup --------------------------------------------------------------------------
    def _abort(self, settle: bool) -> bool:
        """Stop this job's prompts in ComfyUI, and only this job's. With `settle`, wait for them to stop and
        restart ComfyUI if they do not, so the next job never queues behind them (returns whether it
        restarted); without, that wait happens in the cleanup, so a cancel returns at once."""
        pending = [run.prompt_id for run in self.runs if run.submitted and not run.finished]
        if not pending:
            return False
        client = self.runtime.client
        try:
            client.delete_from_queue(pending)
            for prompt_id in pending:
                client.interrupt(prompt_id)
        except ComfyUnavailable as exc:
            log.warning("job=%s could not stop its prompts: %s", self.job_id, exc)
        if settle:
            restarted = self._settle(pending)
            for run in self.runs:
                run.finished = True
            return restarted
        self._unsettled = pending
        return False

    def _settle(self, prompt_ids: list[str]) -> bool:
        deadline = time.monotonic() + self.settings.interrupt_grace
        while time.monotonic() < deadline:
            try:
                if not self._still_queued(set(prompt_ids)):
                    return False
            except ComfyUnavailable:
                return False
            time.sleep(0.2)
        log.error("job=%s prompts %s ignored the interrupt for %.0f s; restarting ComfyUI", self.job_id,
                  prompt_ids, self.settings.interrupt_grace)
        return self.runtime.restart_comfyui()

    def _still_queued(self, prompt_ids: set[str]) -> bool:
        queue = self.runtime.client.queue()
        return any(len(item) > 1 and item[1] in prompt_ids
                   for item in queue.get("queue_running", []) + queue.get("queue_pending", []))

    def _cleanup(self) -> None:
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
        if self._unsettled:
            # An interrupted prompt may still be finishing a node: files are removed once it has stopped.
            self._settle(self._unsettled)
        submitted = [run.prompt_id for run in self.runs if run.submitted] + [
            prompt_id for run in self.runs for prompt_id in run.attempts]
        if self.request is not None and self.request.execution_config.free_memory_after and submitted:
            try:
                self.runtime.client.free(unload_models=True, free_memory=True)
            except ComfyUnavailable:
                pass
        if not self.settings.cleanup:
            return
        if submitted:
            try:
                self.runtime.client.delete_history(submitted)
            except ComfyUnavailable:
                pass
        if not self.runtime.local_files:
            return
        folders = self.runtime.folders
        for sub in {self.staging_folder, *(run.subfolder for run in self.runs)}:
            for kind in ("input", "output"):
                shutil.rmtree(folders[kind] / sub, ignore_errors=True)
        for run in self.runs:
            for ref in run.temp_files:
                with contextlib.suppress(ValueError, KeyError, OSError):
                    local_path(ref, folders).unlink(missing_ok=True)


async def run_job(job: dict[str, Any], runtime: ComfyRuntime, settings: Settings, send_progress: Sender) -> dict[str, Any]:
    return await Job(job, runtime, settings, send_progress).run()
