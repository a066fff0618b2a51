"""Outputs delivered as their node finishes, and the job's outputs collected and delivered at its end.

When ComfyUI reports a node's outputs (`executed`), they are collected and prepared (re-encoded, hashed) on
a thread of the job's own while the rest of the graph runs, and uploaded there too when they go to storage
(S3 or Drive, asked for or chosen by `auto` because the outputs so far are too large to return inline):
the result is ready moments after the last node instead of after every upload. Inline outputs are only
prepared early; their bytes go into the result at the end, as before.

The history entry stays the source of truth: at the end every output it lists is taken from what was
delivered early or delivered then, in the history's order, with the same provider choice, warnings and
entries as a job that delivered everything at the end. An output is announced (an `output` event) once it
is delivered. What was delivered early but does not end up in a result (the job failed, timed out or was
cancelled, or the history does not list it) is removed from storage afterwards, unless it was announced:
an announced output stays where it was announced to be.

Storage keys must not depend on the other outputs: a key template with `{index}` or `{prompt_id}`, or one
without `{filename}` or `{uuid}` (S3), delivers everything at the end.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import string
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .comfy import FileRef, JobFiles
from .comfy.events import Event
from .delivery import DeliveryContext, DeliveryProvider, DeliveryResult, share_image_data
from .delivery.router import choose_provider, prepare_outputs
from .errors import ErrorCode, WorkerError
from .media.outputs import Collected, ProducedOutput, collect_outputs
from .schema import JobInput, OutputEntry, S3Config
from .settings import Settings

log = logging.getLogger("comfy_worker.incremental")

Report = Callable[[OutputEntry], bool]  # announce a delivered output; whether anyone was told


@dataclass
class _Record:
    """One output of one prompt, from its first sighting to its delivery."""

    prompt_id: str
    item: int | None
    prepared: ProducedOutput
    warnings: list[str] = field(default_factory=list)
    entry: OutputEntry | None = None
    provider: DeliveryProvider | None = None
    reported: bool = False
    claimed: bool = False  # part of the job's result


def _ident(prompt_id: str, out: ProducedOutput, position: int) -> tuple[str, ...]:
    if out.ref is not None:
        return (prompt_id, out.ref.type, out.ref.subfolder, out.ref.filename)
    return (prompt_id, out.node_id, out.key, str(position))


def _idents(prompt_id: str, outputs: list[ProducedOutput]) -> list[tuple[str, ...]]:
    counts: dict[tuple[str, str], int] = {}
    found = []
    for out in outputs:
        position = counts.get((out.node_id, out.key), 0)
        counts[(out.node_id, out.key)] = position + 1
        found.append(_ident(prompt_id, out, position))
    return found


def early_keys_allowed(request: JobInput, settings: Settings, provider: str) -> bool:
    """Whether outputs can be stored one node at a time under the keys a whole-job delivery would give them:
    no key may depend on the other outputs, and (S3, where a key is overwritten) each must be its own."""
    storage = request.output_config.storage
    template = storage.key_template or (settings.bucket_key_template if provider == "s3" else "{filename}")
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(template) if name}
    except ValueError:
        return False
    if fields & {"index", "prompt_id"}:
        return False
    return provider != "s3" or bool(fields & {"filename", "uuid"})


class OutputDelivery:
    """One job's outputs: early, node by node, then the rest at the end (`finish`)."""

    def __init__(self, job_id: str, request: JobInput, s3_config: S3Config | None, settings: Settings, *,
                 locate: Callable[[FileRef], Path], files: JobFiles, warnings: list[str], report: Report,
                 batch: bool, loop: asyncio.AbstractEventLoop) -> None:
        self.job_id = job_id
        self.request = request
        self.s3_config = s3_config
        self.settings = settings
        self.locate = locate
        self.files = files
        self.warnings = warnings
        self.report = report
        self.batch = batch
        self.records: dict[tuple[str, ...], _Record] = {}
        self.storage: DeliveryProvider | None = None  # where early deliveries go, once there is one
        self._early_on = True
        self._pool: ThreadPoolExecutor | None = None
        self._futures: list[Future[None]] = []
        self._loop = loop
        self._closed = False

    @property
    def include_temp(self) -> bool:
        choice = self.request.output_config.include_temp
        return self.settings.include_temp_outputs if choice is None else choice

    # --- while the graph runs (the event loop) ---------------------------------------------------------
    def on_executed(self, prompt_id: str, item: int | None, event: Event) -> None:
        """A node reported its outputs: collect, prepare and (to storage) deliver them on the job's thread."""
        output = event.data.get("output")
        if self._closed or event.node is None or not isinstance(output, dict) or not output:
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"deliver-{self.job_id[:8]}")
        work = contextvars.copy_context().run  # its log lines name the job
        future = self._pool.submit(work, self._deliver_early, prompt_id, item, event.node, output)
        future.add_done_callback(_log_failure)
        self._futures.append(future)

    # --- the job's delivery thread -------------------------------------------------------------------------
    def _deliver_early(self, prompt_id: str, item: int | None, node: str, output: dict[str, Any]) -> None:
        collected = collect_outputs({node: output}, include_temp=self.include_temp, locate=self.locate)
        self.files.temp_files.extend(collected.temp_files)
        for ident, out in zip(_idents(prompt_id, collected.outputs), collected.outputs):
            if ident in self.records:
                continue
            record = self._prepare(prompt_id, item, out)
            if record is not None:
                self.records[ident] = record
        if not self._early_on or self._closed:
            return
        held = [r for r in self.records.values() if r.entry is None]
        provider = self.storage or self._storage_choice(held)
        if provider is None or not held:
            return
        self.storage = provider  # the end uses it again (its endpoint is not looked up twice)
        if not early_keys_allowed(self.request, self.settings, provider.name):
            self._early_on = False  # keys that depend on every output: everything goes at the end
            return
        try:
            entries = provider.deliver(DeliveryContext(self.job_id, prompt_id), [r.prepared for r in held])
        except (WorkerError, OSError) as exc:
            # The end delivers these again and fails the way a whole-job delivery would.
            self._early_on = False
            log.warning("delivery while the graph runs failed (%s); the outputs are delivered at the end",
                        exc.message if isinstance(exc, WorkerError) else exc)
            return
        for record, entry in zip(held, entries):
            record.entry, record.provider = entry, provider
        self._loop.call_soon_threadsafe(self._announce, held)

    def _prepare(self, prompt_id: str, item: int | None, out: ProducedOutput) -> _Record | None:
        warnings: list[str] = []
        try:
            prepared = prepare_outputs([out], self.request.output_config, self.settings, warnings)[0]
            prepared.size()
            prepared.sha256()  # hashed now, while the graph runs
        except (WorkerError, OSError) as exc:
            log.debug("output of node %s not prepared early: %s", out.node_id, exc)
            return None  # the end collects it again from the history
        return _Record(prompt_id, item, prepared, warnings)

    def _storage_choice(self, held: list[_Record]) -> DeliveryProvider | None:
        """The provider a whole-job delivery of the outputs so far would use, when it is storage."""
        try:
            provider = choose_provider([r.prepared for r in held], self.request.output_config, self.s3_config,
                                       self.settings, [])
        except WorkerError:
            return None  # the end raises the same error, naming every output
        return None if provider.name == "inline" else provider

    def _announce(self, records: list[_Record]) -> None:
        if self._closed:
            return  # the job ended meanwhile: never announced, so withdrawn
        for record in records:
            record.reported = self.report(self._event_entry(record)) or record.reported

    def _event_entry(self, record: _Record) -> OutputEntry:
        assert record.entry is not None
        return record.entry.model_copy(update={"item": record.item}) if self.batch else record.entry

    # --- at the end (a thread) -----------------------------------------------------------------------------
    def collect(self, prompt_id: str, history_outputs: dict[str, Any]) -> Collected:
        """The prompt's outputs as its history lists them; every file must be readable (OUTPUT_MISSING)."""
        wait(self._futures)
        collected = collect_outputs(history_outputs, include_temp=self.include_temp, locate=self.locate)
        self.files.temp_files.extend(collected.temp_files)  # removed after the job, asked for or not
        self.warnings.extend(collected.warnings)
        if not collected.outputs:
            self.warnings.append("the workflow produced no outputs" + (
                f" ({collected.skipped_temp} temporary outputs not requested)" if collected.skipped_temp else ""))
        readable = [o for i, o in zip(_idents(prompt_id, collected.outputs), collected.outputs)
                    if i not in self.records]  # those delivered early were read then
        Collected(readable, []).require_readable()  # every file must be there before anything is reported
        return collected

    def finish(self, done: list[tuple[str, int, Collected]]) -> DeliveryResult:
        """Deliver what is not delivered yet, as a whole-job delivery would, and return every entry in order."""
        wait(self._futures)
        self._early_on = False
        ordered: list[_Record] = []
        for prompt_id, item, collected in done:
            for ident, out in zip(_idents(prompt_id, collected.outputs), collected.outputs):
                record = self.records.get(ident)
                if record is None:
                    warnings: list[str] = []
                    prepared = prepare_outputs([out], self.request.output_config, self.settings, warnings)[0]
                    record = self.records[ident] = _Record(prompt_id, item, prepared, warnings)
                record.claimed = True
                ordered.append(record)
        warnings = [w for r in ordered for w in r.warnings]
        provider = choose_provider([r.prepared for r in ordered], self.request.output_config, self.s3_config,
                                   self.settings, warnings, chosen=self.storage)
        todo = [r for r in ordered if r.entry is None]
        if todo:
            try:
                entries = provider.deliver(DeliveryContext(self.job_id, done[0][0]), [r.prepared for r in todo])
            except WorkerError as err:
                raise self._with_announced(err) from None
            for record, entry in zip(todo, entries):
                record.entry, record.provider = entry, provider
            self._loop.call_soon_threadsafe(self._announce, todo)
        shared, images = share_image_data([r.entry for r in ordered if r.entry is not None])
        return DeliveryResult(entries=shared, images=images, warnings=warnings, provider=provider.name)

    def _with_announced(self, err: WorkerError) -> WorkerError:
        announced = [r.prepared.filename for r in self.records.values() if r.reported and r.prepared.filename]
        if err.code is ErrorCode.UPLOAD_FAILED and announced:
            err.details["delivered"] = announced
        return err

    # --- afterwards ------------------------------------------------------------------------------------------
    def close(self, after_result: Callable[[Callable[[], None]], None]) -> None:
        """The job is over (on the event loop). Once the deliveries in flight end, whatever was delivered early
        but is neither in the result nor announced is removed from storage (after the result has gone out)."""
        self._closed = True
        if self._pool is None:
            return
        pool, futures = self._pool, list(self._futures)

        def withdraw() -> None:
            wait(futures)
            pool.shutdown(wait=False)
            stray = [r for r in self.records.values() if r.entry is not None and not r.claimed]
            kept = [r for r in stray if r.reported]
            if kept:
                log.info("%d output(s) delivered and announced before the job ended stay in storage", len(kept))
            by_provider: dict[int, tuple[DeliveryProvider, list[OutputEntry]]] = {}
            for record in stray:
                if not record.reported and record.provider is not None and record.entry is not None:
                    by_provider.setdefault(id(record.provider), (record.provider, []))[1].append(record.entry)
            for provider, entries in by_provider.values():
                provider.withdraw(entries)

        after_result(withdraw)


def _log_failure(future: Future[None]) -> None:
    error = future.exception()
    if error is not None:  # the end delivers what this left undelivered
        log.error("delivering outputs while the graph ran failed", exc_info=error)
