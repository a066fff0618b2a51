"""The path of one job, start to finish: parse, stage, submit, follow, collect, deliver, finish."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import re
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .comfy.client import ComfyUnavailable, PromptRejected
from .comfy.events import COMFY_EXITED, RECONNECTED, Event
from .comfy.runtime import ComfyRuntime
from .delivery import DeliveryContext, deliver_outputs
from .delivery.s3 import s3_target
from .errors import ErrorCode, WorkerError
from .media.outputs import Collected, FileRef, collect_outputs, local_path
from .media.staging import MediaRequest, check_images, fetch_media, rewrite_references, upload_files
from .progress import ProgressTracker, Sender
from .schema import JobInput, JobResult, parse_job_input
from .settings import Settings
from .image.volume import model_download_root
from .models.download import DownloadError, ensure_models, options_from_settings
from .models.manifest import FetchWhen, load_manifest
from .workflow.preflight import flatten_node_errors
from .workflow import Policy, ResolvedWorkflow, is_ui_workflow, resolve_workflow, set_media_name

log = logging.getLogger("comfy_worker.job")

# An input no node declares: ComfyUI ignores it when running the node but counts it in the node's cache
# key, so output nodes re-run for every job while everything upstream stays cached.
JOB_MARKER_INPUT = "_worker_job"
JOBS_SUBFOLDER = "worker-jobs"
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
class JobState:
    """What one job has touched in ComfyUI, so it can be cleaned up whatever happens."""

    job_id: str
    token: str
    prompt_id: str
    submitted: bool = False
    finished: bool = False
    temp_files: list[FileRef] = field(default_factory=list)

    @property
    def subfolder(self) -> str:
        return f"{JOBS_SUBFOLDER}/{self.token}"


def new_token(job_id: str) -> str:
    return f"{_UNSAFE.sub('_', job_id)[:40]}-{uuid.uuid4().hex[:8]}"


# ------------------------------------------------------------------------------------------------
# Graph preparation


def check_api_format(workflow: dict[str, Any]) -> None:
    """The minimal shape of an API-format graph, so malformed nodes get a clear error, not a ComfyUI 500."""
    problems = []
    for node_id, node in workflow.items():
        if not isinstance(node, dict):
            problems.append({"node_id": node_id, "problem": "node is not an object"})
        elif not isinstance(node.get("class_type"), str) or not node["class_type"]:
            problems.append({"node_id": node_id, "problem": "node has no class_type"})
        elif not isinstance(node.get("inputs", {}), dict):
            problems.append({"node_id": node_id, "class_type": node["class_type"],
                             "problem": "inputs is not an object"})
    if problems:
        first = problems[0]
        raise WorkerError(ErrorCode.INVALID_WORKFLOW,
                          f"workflow node {first['node_id']}: {first['problem']} (API format expected)",
                          {"problems": problems})


def output_class_types(object_info: dict[str, Any]) -> set[str]:
    return {name for name, info in object_info.items() if isinstance(info, dict) and info.get("output_node")}


def mark_outputs(workflow: dict[str, Any], state: JobState, output_classes: set[str]) -> None:
    """Make every output of this job unique: files go to the job's own subfolder, and output nodes carry
    the job marker so ComfyUI's cache never replays another job's (possibly deleted) files. Only output
    nodes are touched, so loaded models and encoded prompts upstream stay cached between jobs."""
    for node in workflow.values():
        if node.get("class_type") not in output_classes:
            continue
        inputs = node.setdefault("inputs", {})
        prefix = inputs.get("filename_prefix")
        if isinstance(prefix, str):
            inputs["filename_prefix"] = f"{state.subfolder}/{prefix.lstrip('/') or 'ComfyUI'}"
        inputs[JOB_MARKER_INPUT] = state.token


def strip_marker(workflow: dict[str, Any]) -> None:
    for node in workflow.values():
        if isinstance(node, dict) and isinstance(node.get("inputs"), dict):
            node["inputs"].pop(JOB_MARKER_INPUT, None)


# ------------------------------------------------------------------------------------------------
# Errors from ComfyUI


def _node_label(workflow: dict[str, Any], node_id: str, class_type: str | None = None) -> str:
    node = workflow.get(node_id)
    class_type = class_type or (node.get("class_type") if isinstance(node, dict) else None)
    return f"node {node_id} ({class_type})" if class_type else f"node {node_id}"


def rejected_error(body: dict[str, Any], workflow: dict[str, Any]) -> WorkerError:
    """ComfyUI's 400 answer to /prompt as INVALID_WORKFLOW, every node problem named."""
    error = body.get("error") if isinstance(body.get("error"), dict) else {}
    node_errors = body.get("node_errors") if isinstance(body.get("node_errors"), dict) else {}
    problems = flatten_node_errors(node_errors, workflow)
    extra = error.get("extra_info") or {}
    if not problems and error:
        node_id = extra.get("node_id")
        if node_id is None:
            match = re.search(r"#([^']+)'", str(error.get("details", "")))
            node_id = match.group(1) if match else None
        class_type = extra.get("class_type")
        if node_id is not None and class_type is None:
            class_type = workflow.get(str(node_id), {}).get("class_type") if isinstance(workflow.get(str(node_id)), dict) else None
        problems.append({"node_id": None if node_id is None else str(node_id), "class_type": class_type,
                         "type": error.get("type"), "input_name": None, "message": error.get("message"),
                         "details": error.get("details")})
    parts = []
    for p in problems[:5]:
        where = _node_label(workflow, p["node_id"], p["class_type"]) if p["node_id"] else "workflow"
        what = p["message"] or p["type"]
        if p.get("details") and p["details"] not in str(what):
            what = f"{what}: {p['details']}"
        parts.append(f"{where}: {what}")
    if len(problems) > 5:
        parts.append(f"and {len(problems) - 5} more")
    message = "ComfyUI rejected the workflow: " + ("; ".join(parts) or str(error.get("message", "invalid")))
    return WorkerError(ErrorCode.INVALID_WORKFLOW, message,
                       {"source": "comfyui", "problems": problems, "error": error, "node_errors": node_errors})


def _is_oom(exception_type: str, message: str) -> bool:
    text = f"{exception_type} {message}".lower()
    return "outofmemory" in text.replace(" ", "") or "out of memory" in text


# Errors after which CUDA in this process cannot be trusted again: only a fresh worker helps.
_GPU_FATAL = ("illegal memory access", "device-side assert", "cuda error: unspecified launch failure",
              "cudaerrorlaunchfailure", "cublas_status_execution_failed", "ecc error", "uncorrectable",
              "cuda error: an illegal instruction")


def _gpu_unusable(exception_type: str, message: str) -> bool:
    text = f"{exception_type} {message}".lower()
    return any(marker in text for marker in _GPU_FATAL)


def history_error(entry: dict[str, Any], workflow: dict[str, Any]) -> WorkerError | None:
    """The failure recorded in a history entry, or None if the prompt succeeded."""
    status = entry.get("status") or {}
    if status.get("status_str") == "success" and status.get("completed", True):
        return None
    for name, data in status.get("messages") or []:
        if name == "execution_error":
            node_id = str(data.get("node_id"))
            class_type = data.get("node_type") or workflow.get(node_id, {}).get("class_type")
            exc_type = str(data.get("exception_type", ""))
            exc_msg = str(data.get("exception_message", "")).strip()
            details = {"node_id": node_id, "class_type": class_type, "exception_type": exc_type,
                       "exception_message": exc_msg, "executed": data.get("executed", []),
                       "traceback": (data.get("traceback") or [])[-3:]}
            if _is_oom(exc_type, exc_msg):
                return WorkerError(ErrorCode.OUT_OF_MEMORY,
                                   f"{_node_label(workflow, node_id, class_type)} ran out of GPU memory: "
                                   f"{exc_msg.splitlines()[0] if exc_msg else exc_type}", details)
            first_line = exc_msg.splitlines()[0] if exc_msg else ""
            fatal = _gpu_unusable(exc_type, exc_msg)
            if fatal:
                details["gpu_fault"] = True
            return WorkerError(ErrorCode.EXECUTION_ERROR,
                               f"{_node_label(workflow, node_id, class_type)} failed: {exc_type}: {first_line}"
                               + (" (the GPU is in a bad state; this worker will be replaced)" if fatal else ""),
                               details, refresh_worker=fatal)
        if name == "execution_interrupted":
            node_id = str(data.get("node_id"))
            return WorkerError(ErrorCode.CANCELLED,
                               f"ComfyUI interrupted the prompt at {_node_label(workflow, node_id, data.get('node_type'))}",
                               {"node_id": node_id, "class_type": data.get("node_type")})
    return WorkerError(ErrorCode.EXECUTION_ERROR, "ComfyUI reported the prompt as failed without an error message",
                       {"status": status})


def dry_run_result(resolved: ResolvedWorkflow, warnings: list[str]) -> dict[str, Any]:
    """What a dry run returns: the graph ComfyUI would get and the pre-flight report; nothing is run."""
    assert resolved.report is not None
    return {"dry_run": True, "workflow": resolved.graph, "preflight": resolved.report.to_dict(),
            "media_inputs": [{"node_id": m.node_id, "input_name": m.input_name, "key": m.key}
                             for m in resolved.media],
            "seeds": resolved.seeds, "warnings": warnings}


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
        self.state = JobState(job_id=self.job_id, token=new_token(self.job_id), prompt_id=str(uuid.uuid4()))
        self.warnings: list[str] = []
        self._catalogue: dict[str, Any] = {}
        self.request: JobInput | None = None

    async def run(self) -> dict[str, Any]:
        """The job's result dict for the runpod SDK: `output` on success, `error` (a JSON string) on failure."""
        try:
            timeout = self._timeout()
            try:
                result = await asyncio.wait_for(self._run(), timeout) if timeout else await self._run()
            except asyncio.TimeoutError:
                raise await self._timed_out(timeout) from None
            log.info("job=%s outcome=completed seconds=%.3f", self.job_id, result["timings"]["total"])
            return result
        except WorkerError as err:
            log.warning("job=%s outcome=failed code=%s message=%s", self.job_id, err.code.value, err.message)
            out: dict[str, Any] = {"error": err.to_error_string(self.job_id, self.timings.total())}
            if err.refresh_worker:
                out["refresh_worker"] = True
            return out
        except asyncio.CancelledError:
            log.warning("job=%s outcome=cancelled", self.job_id)
            await asyncio.shield(asyncio.to_thread(self._abort, False))
            raise
        finally:
            await asyncio.shield(asyncio.to_thread(self._cleanup))

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
                           {"timeout": timeout, "prompt_id": self.state.prompt_id, "comfyui_restarted": restarted})

    async def _run(self) -> dict[str, Any]:
        t = self.timings
        with t.stage("parse"):
            request = parse_job_input(self.raw.get("input"))
            self.request = request
            check_images(request.images, max_count=self.settings.max_input_images)
        with t.stage("wait_comfyui"):
            await self.runtime.ensure_ready_async()
        with t.stage("preflight"):
            resolved = await asyncio.to_thread(self._resolve, request, [image.name for image in request.images])
        if request.execution_config.dry_run:
            result = dry_run_result(resolved, self.warnings)
            result["timings"] = t.total()
            return result
        with t.stage("stage_inputs"):
            await asyncio.to_thread(self._stage, resolved, request)
        mark_outputs(resolved.graph, self.state, output_class_types(self._catalogue))
        entry = await self._submit_and_follow(resolved.graph, resolved.output_nodes)
        failure = history_error(entry, resolved.graph)
        if failure:
            raise failure
        with t.stage("collect"):
            collected = self._collect(entry, request)
        with t.stage("deliver"):
            result = await asyncio.to_thread(self._deliver, collected)
        if resolved.seeds:
            result["seeds"] = resolved.seeds
        result["timings"] = t.total()
        return result

    def _resolve(self, request: JobInput, image_names: list[str]) -> ResolvedWorkflow:
        """Convert, apply inputs, randomise seeds and pre-flight the graph: before any upload or GPU time."""
        if isinstance(request.inputs, list):
            raise WorkerError(ErrorCode.INVALID_INPUT, "inputs: a list of input sets (a batch) needs one job per "
                              "set with this worker version; send each set as its own job",
                              {"errors": [{"field": "inputs", "problem": "batches are not supported"}]})
        self._catalogue = self.runtime.catalogue()
        workflow = copy.deepcopy(request.workflow)
        if not is_ui_workflow(workflow):
            check_api_format(workflow)

        def attempt() -> ResolvedWorkflow:
            return resolve_workflow(
                copy.deepcopy(workflow), self._catalogue, inputs=request.inputs,
                randomize=request.execution_config.randomize_seeds,
                output_nodes=request.execution_config.output_nodes, models=self.runtime.model_lists(),
                policy=Policy.from_settings(self.settings), input_files=self.runtime.input_files(),
                staged_files=image_names)

        try:
            return attempt()
        except WorkerError as err:
            if err.code is not ErrorCode.MISSING_MODELS or not self._fetch_on_demand(err):
                raise
        return attempt()

    def _fetch_on_demand(self, err: WorkerError) -> bool:
        """Download missing models that models.yaml lists as `on_demand`; True when all of them were."""
        if not self.settings.model_download_on_demand:
            return False
        manifest = load_manifest(self.settings.models_manifest, missing_ok=True)
        entries = []
        for missing in err.details.get("missing_models", []):
            entry = manifest.lookup(str(missing.get("folder")), str(missing.get("file")))
            if entry is None or entry.fetch is not FetchWhen.ON_DEMAND:
                return False
            entries.append(entry)
        if not entries:
            return False
        log.info("job=%s fetching %d on-demand model(s): %s", self.job_id, len(entries),
                 ", ".join(e.filename for e in entries))
        with self.timings.stage("fetch_models"):
            try:
                ensure_models(entries, model_download_root(self.settings), options=options_from_settings(self.settings))
            except DownloadError as exc:
                raise exc.to_worker_error() from None
        self.runtime.forget_model_lists()
        return True

    def _stage(self, resolved: ResolvedWorkflow, request: JobInput) -> None:
        """Fetch every input (after the pre-flight, so a bad graph costs no download) and upload it into
        this job's own subfolder of ComfyUI's input folder."""
        wanted = [MediaRequest(f"images[{i}].image", image.image, image.name) for i, image in enumerate(request.images)]
        wanted += [MediaRequest(f"inputs.{slot.key}", slot.value, None, "any") for slot in resolved.media]
        if not wanted:
            return
        s3_defaults = s3_target(self.settings, self.raw.get("s3Config"), require_bucket=False)
        files = fetch_media(wanted, settings=self.settings, s3_defaults=s3_defaults,
                            max_total=self.settings.max_input_total_bytes)
        staged = upload_files(self.runtime.client, files, self.state.subfolder)
        count = len(request.images)
        rewrite_references(resolved.graph, staged[:count])
        for slot, item in zip(resolved.media, staged[count:]):
            set_media_name(resolved.graph, slot, item.reference)

    # --- submit and follow ------------------------------------------------------------------------
    async def _submit_and_follow(self, workflow: dict[str, Any], targets: list[str] | None) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        events = self.runtime.events
        queue = events.subscribe(self.state.prompt_id, loop)
        tracker = ProgressTracker(workflow, self.state.prompt_id, self.send_progress)
        try:
            with self.timings.stage("submit"):
                try:
                    answer = await asyncio.to_thread(
                        self.runtime.client.queue_prompt, workflow, client_id=events.client_id,
                        prompt_id=self.state.prompt_id, partial_execution_targets=targets)
                except PromptRejected as exc:
                    strip_marker(workflow)
                    raise rejected_error(exc.body, workflow) from None
                except ComfyUnavailable as exc:
                    raise self.runtime.unavailable(f"ComfyUI did not accept the prompt: {exc}") from exc
                self.state.submitted = True
                if answer.get("node_errors"):
                    # Valid branches still run; the broken ones are named so nothing is lost silently.
                    bad = rejected_error({"node_errors": answer["node_errors"]}, workflow)
                    self.warnings.append(f"some output branches were skipped: {bad.message}")
            with self.timings.stage("execute"):
                entry = await self._follow(queue, tracker)
            self.state.finished = True
            return entry
        finally:
            events.unsubscribe(self.state.prompt_id)

    async def _follow(self, queue: asyncio.Queue[Event], tracker: ProgressTracker) -> dict[str, Any]:
        poll = self.settings.history_poll_interval
        stall = self.settings.stall_timeout
        terminal_seen = False
        last_news = time.monotonic()
        while True:
            try:
                event = await asyncio.wait_for(queue.get(), timeout=0.5 if terminal_seen else poll)
            except asyncio.TimeoutError:
                # No news: the websocket may have lost the end of the prompt. /history is the truth.
                entry = await self._history()
                if entry is not None:
                    return entry
                if not self.runtime.is_alive():
                    raise self.runtime.unavailable("ComfyUI stopped while running the job",
                                                   prompt_id=self.state.prompt_id)
                if stall and tracker.stage == "running" and time.monotonic() - last_news > stall:
                    restarted = await asyncio.to_thread(self._abort, True)
                    raise WorkerError(ErrorCode.TIMEOUT, f"ComfyUI made no progress for {stall:g} s while running "
                                      f"{_node_label(tracker.workflow, tracker.node or '?')}; the prompt was "
                                      "stopped" + (" and ComfyUI restarted" if restarted else ""),
                                      {"stalled": True, "stall_timeout": stall, "node_id": tracker.node,
                                       "comfyui_restarted": restarted})
                continue
            last_news = time.monotonic()
            if event.type == COMFY_EXITED:
                raise self.runtime.unavailable(
                    f"ComfyUI exited (code {event.data.get('exit_code')}) while running the job; it is being "
                    "restarted", prompt_id=self.state.prompt_id)
            if event.type == RECONNECTED:
                entry = await self._history()
                if entry is not None:
                    return entry
                continue
            tracker.on_event(event)
            if event.type in {"execution_success", "execution_error", "execution_interrupted"}:
                terminal_seen = True
            elif event.type == "executing" and event.data.get("node") is None:
                entry = await self._history(retries=20)
                if entry is not None:
                    return entry
                terminal_seen = True

    async def _history(self, retries: int = 1) -> dict[str, Any] | None:
        for attempt in range(retries):
            try:
                entry = await asyncio.to_thread(self.runtime.client.history, self.state.prompt_id)
            except ComfyUnavailable:
                entry = None
            if entry is not None:
                return entry
            if attempt + 1 < retries:
                await asyncio.sleep(0.05)
        return None

    # --- outputs ------------------------------------------------------------------------------------
    def _read_file(self, ref: FileRef) -> bytes:
        if self.runtime.local_files:
            try:
                path = local_path(ref, self.runtime.folders)
                if path.is_file():
                    return path.read_bytes()
            except (ValueError, KeyError, OSError):
                pass
        return self.runtime.client.view(ref.filename, ref.subfolder, ref.type)

    def _collect(self, entry: dict[str, Any], request: JobInput) -> Collected:
        include_temp = request.output_config.include_temp
        if include_temp is None:
            include_temp = self.settings.include_temp_outputs
        collected = collect_outputs(entry.get("outputs") or {}, include_temp=include_temp, loader=self._read_file)
        self.state.temp_files = [o.ref for o in collected.outputs if o.ref and o.ref.type == "temp"]
        # Temp files that were not asked for are still removed after the job.
        for outputs in (entry.get("outputs") or {}).values():
            for value in outputs.values() if isinstance(outputs, dict) else []:
                for item in value if isinstance(value, list) else []:
                    if isinstance(item, dict) and item.get("type") == "temp" and "filename" in item:
                        self.state.temp_files.append(FileRef(item["filename"], str(item.get("subfolder") or ""), "temp"))
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
                item.content()
            except (OSError, FileNotFoundError, ComfyUnavailable) as exc:
                missing.append({"node_id": item.node_id, "filename": item.ref.filename,
                                "subfolder": item.ref.subfolder, "type": item.ref.type, "reason": str(exc)})
        if missing:
            raise WorkerError(ErrorCode.OUTPUT_MISSING,
                              f"{len(missing)} output file(s) reported by ComfyUI could not be read",
                              {"missing": missing})
        return collected

    def _deliver(self, collected: Collected) -> dict[str, Any]:
        assert self.request is not None
        ctx = DeliveryContext(job_id=self.job_id, prompt_id=self.state.prompt_id)
        delivered = deliver_outputs(ctx, collected.outputs, self.request.output_config, self.raw.get("s3Config"),
                                    self.settings)
        self.warnings.extend(delivered.warnings)
        result = JobResult(prompt_id=self.state.prompt_id, outputs=delivered.entries, images=delivered.images,
                           timings={}, warnings=self.warnings)
        return result.model_dump(mode="json", exclude_none=True)

    # --- abort and cleanup --------------------------------------------------------------------------
    def _abort(self, settle: bool) -> bool:
        """Stop this job's prompt in ComfyUI, and only this job's. With `settle`, wait for it to stop and
        restart ComfyUI if it does not, so the next job never queues behind it. Returns whether it restarted."""
        if not self.state.submitted or self.state.finished:
            return False
        client = self.runtime.client
        for action in (lambda: client.delete_from_queue([self.state.prompt_id]),
                       lambda: client.interrupt(self.state.prompt_id)):
            try:
                action()
            except ComfyUnavailable as exc:
                log.warning("job=%s could not stop prompt: %s", self.job_id, exc)
        if settle:
            return self._settle()
        # A cancel returns at once; the check that the prompt really stopped runs on its own.
        threading.Thread(target=self._settle, name=f"settle-{self.job_id}", daemon=True).start()
        return False

    def _settle(self) -> bool:
        deadline = time.monotonic() + self.settings.interrupt_grace
        while time.monotonic() < deadline:
            try:
                if self.runtime.client.history(self.state.prompt_id) is not None or not self._still_queued():
                    return False
            except ComfyUnavailable:
                return False
            time.sleep(0.2)
        log.error("job=%s prompt %s ignored the interrupt for %.0f s; restarting ComfyUI", self.job_id,
                  self.state.prompt_id, self.settings.interrupt_grace)
        return self.runtime.restart_comfyui()

    def _still_queued(self) -> bool:
        queue = self.runtime.client.queue()
        return any(len(item) > 1 and item[1] == self.state.prompt_id
                   for item in queue.get("queue_running", []) + queue.get("queue_pending", []))

    def _cleanup(self) -> None:
        if self.request is not None and self.request.execution_config.free_memory_after and self.state.submitted:
            try:
                self.runtime.client.free(unload_models=True, free_memory=True)
            except ComfyUnavailable:
                pass
        if not self.settings.cleanup:
            return
        if self.state.submitted:
            try:
                self.runtime.client.delete_history([self.state.prompt_id])
            except ComfyUnavailable:
                pass
        if not self.runtime.local_files:
            return
        folders = self.runtime.folders
        for kind in ("input", "output"):
            shutil.rmtree(folders[kind] / self.state.subfolder, ignore_errors=True)
        for ref in self.state.temp_files:
            with contextlib.suppress(ValueError, KeyError, OSError):
                local_path(ref, folders).unlink(missing_ok=True)


async def run_job(job: dict[str, Any], runtime: ComfyRuntime, settings: Settings, send_progress: Sender) -> dict[str, Any]:
    return await Job(job, runtime, settings, send_progress).run()
