"""The path of one job, in one direction: parse → resolve (models fetched as part of it) → preflight → stage →
submit → follow → collect → deliver → finish. A single job is a batch of one. Each stage is a call into its
own package; ComfyUI is reached only through the job's ComfyConnection; the answer is shaped once, at the
end, by `results`."""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import results
from .comfy import ComfyConnection, JobFiles, PromptOutcome
from .comfy.failures import out_of_memory_again
from .delivery import check_delivery_options
from .deployments import Deployments, resolve_request
from .errors import ErrorCode, WorkerError
from .incremental import OutputDelivery
from .live import LiveFeed, Sink
from .logs import current_job
from .media.outputs import Collected
from .media.staging import StagingPlan, check_images, stage
from .prepare import JobModels, in_memory, prepare
from .progress import BatchProgress, Sender
from .redaction import JOBS_SUBFOLDER
from .schema import JobInput, S3Config, parse_s3_config
from .settings import Settings
from .storage.s3 import s3_target
from .timings import Timings
from .workflow import ResolvedWorkflow

log = logging.getLogger("comfy_worker.job")

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


@dataclass
class Prompt:
    """One prompt of the job (a batch has one per input set) and what became of it."""

    index: int
    resolved: ResolvedWorkflow
    prompt_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    submitted: bool = False
    outcome: PromptOutcome | None = None
    error: WorkerError | None = None
    attempts: list[str] = field(default_factory=list)  # earlier prompt ids (the out-of-memory retry)

    def retry(self) -> None:
        """Run the same graph again under a new prompt id; the old one is kept for cleanup."""
        self.attempts.append(self.prompt_id)
        self.prompt_id, self.submitted, self.outcome, self.error = str(uuid.uuid4()), False, None, None


class Job:
    """One job against one ComfyConnection."""

    def __init__(self, job: dict[str, Any], comfy: ComfyConnection, settings: Settings, send_progress: Sender,
                 deployments: Deployments | None = None, stream: Sink | None = None) -> None:
        self.raw = job
        self.job_id = str(job.get("id", "unknown"))
        self.comfy = comfy
        self.settings = settings
        # The workflows it may name (none loaded: the operator's deployed-only rule still holds); `named`: the
        # deployed workflow its result names.
        self.deployments, self.named = deployments or Deployments.none(settings), {}
        self.live = LiveFeed(self.job_id, send_progress, stream)  # progress, previews, outputs, the end
        self.delivery: OutputDelivery | None = None
        self.timings = Timings()
        self.token = f"{_UNSAFE.sub('_', self.job_id)[:40]}-{uuid.uuid4().hex[:8]}"
        self.folder = f"{JOBS_SUBFOLDER}/{self.token}"  # its own subfolder of ComfyUI's input and output folders
        self.prompts: list[Prompt] = []
        self.warnings: list[str] = []
        self.request: JobInput | None = None
        self.s3_config: S3Config | None = None
        self.plan: StagingPlan | None = None
        self.files = JobFiles(subfolders=[self.folder])
        self.models = JobModels(job, self.live.progress)  # files named by URL: held until the cleanup
        self.scratch = Path(tempfile.gettempdir()) / f"comfy-worker-{self.token}"  # outputs copied from /view

    async def run(self) -> dict[str, Any]:
        """The result for the runpod SDK: `output` on success, `error` (a JSON string) on failure."""
        current_job.set(self.job_id)
        status, result = "FAILED", None
        try:
            timeout = self._parse()
            try:
                result = await asyncio.wait_for(self._stages(), timeout) if timeout else await self._stages()
            except asyncio.TimeoutError:
                raise await self._timed_out(timeout) from None
            result.update(self.named)  # a deployed workflow's result names it and its version
            log.info("outcome=completed seconds=%.3f outputs=%s", result["timings"]["total"], results.summary(result))
            status = "COMPLETED"
        except WorkerError as err:
            log.warning("outcome=failed code=%s message=%s", err.code.value, err.message)
            result = results.failed(err, self.job_id, self.timings.total())
        except asyncio.CancelledError:
            log.warning("outcome=cancelled")
            self._stop_prompts(settle=False)
            status = "CANCELLED"
            raise
        except Exception as exc:  # a bug must still reach the caller as a structured error, never a traceback
            log.exception("outcome=failed code=INTERNAL_ERROR")
            self._stop_prompts(settle=False)
            err = WorkerError(ErrorCode.INTERNAL_ERROR, f"unexpected error in the worker ({type(exc).__name__}); "
                              "the job was stopped", {"exception_type": type(exc).__name__})
            result = results.failed(err, self.job_id, self.timings.total())
        finally:
            self.live.end(status, result)
            if status == "CANCELLED":  # the caller's URL still hears of it, off the cancelled task
                self.live.drain_later()
            if self.delivery is not None:  # early deliveries no result claims go first, then the job's files
                self.delivery.close(self.comfy.after_result)
            # The caller gets the result now; staged files, outputs and history go right after.
            self.comfy.after_result(self._cleanup)
        await self.live.drain()  # bounded (EVENTS_DRAIN_TIMEOUT)
        assert result is not None
        return result

    # --- parse -------------------------------------------------------------------------------------------
    def _parse(self) -> float | None:
        """The request, checked whole; the job's time limit is the request's (capped) or the operator's."""
        with self.timings.stage("parse"):
            self.request, self.named = resolve_request(self.raw.get("input"), self.settings, self.deployments,
                                                       self.warnings)
            self.s3_config = parse_s3_config(self.raw.get("s3Config"))
            check_images(self.request.images, max_count=self.settings.max_input_images)
            check_delivery_options(self.request.output_config, self.s3_config, self.settings)
            self.live.configure(self.request, self.settings, self.warnings)
        return self.settings.time_limit(self.request.execution_config.timeout, self.warnings)

    async def _stages(self) -> dict[str, Any]:
        assert self.request is not None
        if self.request.list_workflows:
            return self.deployments.catalogue(self.timings.total())
        with self.timings.stage("wait_comfyui"):
            await self.comfy.ready()
        with self.timings.stage("preflight"):
            work = functools.partial(prepare, self.request, self.comfy, self.settings, self.models,
                                     folder=self.folder, token=self.token, timings=self.timings)
            inline = in_memory(self.request, self.comfy, self.settings)
            resolved, self.plan = work() if inline else await asyncio.to_thread(work)
        batch = isinstance(self.request.inputs, list)
        if self.request.execution_config.dry_run:
            return results.dry_run(resolved, batch, self.warnings, self.timings.total())
        self.prompts = [Prompt(i, r) for i, r in enumerate(resolved)]
        self.delivery = OutputDelivery(self.job_id, self.request, self.s3_config, self.settings, batch=batch,
                                       locate=lambda ref: self.comfy.locate(ref, self.scratch), files=self.files,
                                       warnings=self.warnings, report=self.live.output,
                                       loop=asyncio.get_running_loop())
        if self.plan is not None and self.plan.requests:
            with self.timings.stage("stage_inputs"):
                await asyncio.to_thread(stage, self.plan, self.comfy, self.folder, settings=self.settings,
                                        s3_defaults=s3_target(self.settings, self.s3_config, require_bucket=False))
        await self._execute(batch)
        if not batch and self.prompts[0].error:
            raise self.prompts[0].error
        # Outputs are read, encoded and delivered on a thread: files of any size never stall the event loop,
        # where other jobs and the SDK's own job-take and stop polling run.
        return await asyncio.to_thread(self._finish, batch)

    # --- submit and follow ----------------------------------------------------------------------------------
    async def _execute(self, batch: bool) -> None:
        """Run every prompt; one that ran out of GPU memory runs once more after ComfyUI has freed its memory
        (models unloaded, caches dropped), unless the operator or the request says not to."""
        progress = BatchProgress(len(self.prompts), self.live.progress)
        await self._run_prompts(self.prompts, batch, progress)
        short = [p for p in self.prompts if p.error is not None and p.error.code is ErrorCode.OUT_OF_MEMORY]
        retry = self.request.execution_config.retry_on_oom if self.request else None
        if not short or not (self.settings.oom_retry if retry is None else retry):
            return
        log.warning("%d prompt(s) ran out of GPU memory; freeing ComfyUI's memory and running them again", len(short))
        with self.timings.stage("free_memory"):
            freed = await asyncio.to_thread(self.comfy.free_memory)
        for prompt in short:
            prompt.retry()
        await self._run_prompts(short, batch, progress)
        for prompt in short:
            if prompt.error is not None and prompt.error.code is ErrorCode.OUT_OF_MEMORY:
                prompt.error = out_of_memory_again(prompt.error, freed, prompt.attempts)
            elif prompt.error is None:
                self.warnings.append(f"{f'item {prompt.index} ' if batch else ''}ran out of GPU memory once; it "
                                     "completed after ComfyUI's memory was freed")

    async def _run_prompts(self, prompts: list[Prompt], batch: bool, progress: BatchProgress) -> None:
        """Queue the prompts together (models stay loaded between them) and follow each to its end. A
        ComfyUI that died or hung takes the whole job down: nothing of it can be trusted."""
        loop = asyncio.get_running_loop()
        watches = {p.prompt_id: self.comfy.watch(p.prompt_id, p.resolved.graph, loop) for p in prompts}
        assert self.delivery is not None
        try:
            with self.timings.stage("submit"):
                for prompt in prompts:
                    await self._submit(prompt, batch)
            with self.timings.stage("execute"):
                followed = [p for p in prompts if p.submitted]
                outcomes = await asyncio.gather(*[watches[p.prompt_id].outcome(self.live.listener(
                    p.resolved.graph, p.prompt_id, p.index if batch else None, progress.sender(p.index),
                    self.delivery.on_executed)) for p in followed], return_exceptions=True)
        finally:
            for watch in watches.values():
                watch.close()
        for prompt, outcome in zip(followed, outcomes):
            if isinstance(outcome, WorkerError) and outcome.code in {ErrorCode.COMFYUI_UNAVAILABLE, ErrorCode.TIMEOUT}:
                raise outcome
            if isinstance(outcome, BaseException):
                raise outcome
            prompt.outcome, prompt.error = outcome, outcome.error

    async def _submit(self, prompt: Prompt, batch: bool) -> None:
        assert self.request is not None
        # Submitted from the moment it is sent: a cancel that comes while the POST is on its way stops it too.
        prompt.submitted = True
        self.files.prompt_ids.append(prompt.prompt_id)
        try:
            extra = {**self.request.comfy_extra_data(self.settings.comfy_org_api_key), **self.live.comfy_extra_data()}
            warnings = await asyncio.to_thread(self.comfy.submit, prompt.prompt_id, prompt.resolved.graph,
                                               prompt.resolved.output_nodes, extra)
        except WorkerError as err:
            prompt.submitted = False
            self.files.prompt_ids.remove(prompt.prompt_id)
            if not batch or err.code is ErrorCode.COMFYUI_UNAVAILABLE:
                raise
            prompt.error = err
            return
        self.warnings.extend(warnings)

    # --- collect and deliver -----------------------------------------------------------------------------------
    def _finish(self, batch: bool) -> dict[str, Any]:
        """Collect and deliver every prompt that succeeded; a failed batch item never loses the others'."""
        assert self.request is not None and self.delivery is not None
        done: list[tuple[Prompt, Collected]] = []
        with self.timings.stage("collect"):
            for prompt in self.prompts:
                if prompt.error is None and prompt.outcome is not None:
                    try:
                        done.append((prompt, self.delivery.collect(prompt.prompt_id, prompt.outcome.outputs)))
                    except WorkerError as err:
                        if not batch:
                            raise
                        prompt.error = err
        failed = [p for p in self.prompts if p.error is not None]
        if not done:
            raise results.all_failed([(p.index, p.prompt_id, p.error) for p in failed if p.error],
                                     len(self.prompts))
        with self.timings.stage("deliver"):
            delivered = self.delivery.finish([(p.prompt_id, p.index, c) for p, c in done])
        warnings = self.warnings + delivered.warnings
        items = None
        if batch:
            owners = [p.index for p, c in done for _ in c.outputs]
            delivered.entries = [e.model_copy(update={"item": i}) for e, i in zip(delivered.entries, owners)]
            warnings += [f"item {p.index} failed: {p.error.code.value}: {p.error.message}" for p in failed if p.error]
            items = [{"index": p.index, "prompt_id": p.prompt_id, "status": "FAILED" if p.error else "COMPLETED",
                      **({"error": p.error.payload()} if p.error else {})} for p in self.prompts]
        seeds = {p.index: p.resolved.seeds for p in self.prompts if p.resolved.seeds}
        return results.completed(self.prompts[0].prompt_id, delivered, warnings, seeds, items, self.timings.total())

    # --- stop and clean up ---------------------------------------------------------------------------------------
    async def _timed_out(self, timeout: float) -> WorkerError:
        stopped = [p.prompt_id for p in self.prompts if p.submitted]  # named before the stop unmarks them
        return results.timed_out(timeout, stopped, await asyncio.to_thread(self._stop_prompts, settle=True))

    def _stop_prompts(self, *, settle: bool) -> bool:
        """Stop this job's prompts in ComfyUI, and only this job's. Without `settle` a cancel returns at once
        and waiting for them to stop is left to the cleanup."""
        pending = [p.prompt_id for p in self.prompts if p.submitted and p.outcome is None]
        if not pending:
            return False
        restarted = self.comfy.cancel(pending, settle=settle)
        if settle:
            for prompt in self.prompts:
                prompt.submitted = False
        else:
            self.files.unsettled = pending
        return restarted

    def _cleanup(self) -> None:
        shutil.rmtree(self.scratch, ignore_errors=True)
        if self.request is not None and self.request.execution_config.free_memory_after and self.files.prompt_ids:
            self.comfy.free_memory()
        if self.settings.cleanup:
            self.comfy.cleanup(self.files)
        elif self.files.unsettled:
            self.comfy.cleanup(JobFiles(unsettled=self.files.unsettled))
        self.models.release()


async def run_job(job: dict[str, Any], comfy: ComfyConnection, settings: Settings, send_progress: Sender, *,
                  deployments: Deployments | None = None, stream: Sink | None = None) -> dict[str, Any]:
    return await Job(job, comfy, settings, send_progress, deployments, stream).run()
