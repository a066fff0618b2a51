"""`comfy-run --stream`: a job followed through RunPod's `/stream` (an endpoint in stream mode, STREAM_MODE):
the progress bar with node and step, each latent preview saved as it comes, each output written as soon as
it is delivered; the result, the stream's last chunk, fills in what the events did not carry."""

from __future__ import annotations

import base64
import logging
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .backends import FINAL, Backend
from .display import ProgressDisplay
from .outcome import Outcome, output_key, parse_error, save_entry
from .runner import cancelled
from .spec import JobSpec

log = logging.getLogger("comfy_run")

_DATA_URI = re.compile(r"^data:image/(jpeg|webp|png);base64,(.*)$", re.DOTALL)


class LiveSaver:
    """Takes the job's chunks one by one: shows progress, writes previews and outputs into `folder`."""

    def __init__(self, folder: Path, display: ProgressDisplay, *, download_timeout: float = 60.0) -> None:
        self.folder = folder
        self.display = display
        self.download_timeout = download_timeout
        self.previews: list[Path] = []
        self.saved: dict[tuple[Any, ...], Path] = {}
        self.result: dict[str, Any] | None = None
        self.failure: Any = None

    def __call__(self, chunk: dict[str, Any]) -> None:
        kind = chunk.get("event")
        if kind == "progress" and isinstance(chunk.get("progress"), dict):
            self.display.update("IN_PROGRESS", chunk["progress"])
        elif kind == "preview":
            self._preview(chunk)
        elif kind == "output" and isinstance(chunk.get("output"), dict):
            self._output(chunk["output"], data_omitted=bool(chunk.get("data_omitted")))
        elif kind is None and "error" in chunk:
            self.failure = chunk["error"]  # the local test server passes a failed job's last chunk on
        elif kind is None:
            self.result = chunk

    def _preview(self, chunk: dict[str, Any]) -> None:
        match = _DATA_URI.match(str(chunk.get("image") or ""))
        if match is None:
            return
        folder = self.folder / "previews"
        folder.mkdir(parents=True, exist_ok=True)
        ext = "jpg" if match.group(1) == "jpeg" else match.group(1)
        step = chunk.get("step")
        name = f"{int(chunk.get('seq') or 0):04d}-node{chunk.get('node')}" + (
            f"-step{step:g}" if isinstance(step, (int, float)) else "") + f".{ext}"
        path = folder / re.sub(r"[^A-Za-z0-9._-]", "_", name)
        path.write_bytes(base64.b64decode(match.group(2)))
        self.previews.append(path)
        log.debug("preview saved: %s", path)

    def _output(self, entry: dict[str, Any], *, data_omitted: bool) -> None:
        if data_omitted:
            return  # its bytes come with the result
        self.folder.mkdir(parents=True, exist_ok=True)
        path = save_entry(self.folder, entry, len(self.saved), download_timeout=self.download_timeout)
        if path is not None:
            self.saved[output_key(entry)] = path
            log.info("saved %s (node %s, as it was delivered)", path, entry.get("node_id"))


def stream_workflow(backend: Backend, spec: JobSpec, saver: LiveSaver, *, request: dict[str, Any] | None = None,
                    on_submitted: Callable[[str], None] | None = None, poll_interval: float = 1.0,
                    sleep: Callable[[float], None] = time.sleep) -> Outcome:
    """Run `spec` and follow it through `/stream` until it is final; Ctrl-C cancels it."""
    job_id = backend.submit({**(request or {}), "input": spec.job_input()})
    if on_submitted:
        on_submitted(job_id)
    try:
        while True:
            answer = backend.stream(job_id)
            for item in answer.get("stream") or []:
                chunk = item.get("output") if isinstance(item, dict) else None
                if isinstance(chunk, dict):
                    saver(chunk)
            status = str(answer.get("status", "UNKNOWN"))
            if status in FINAL:
                return _final(backend, job_id, status, answer, saver)
            sleep(poll_interval)
    except KeyboardInterrupt:
        return cancelled(backend, job_id)


def _final(backend: Backend, job_id: str, status: str, answer: dict[str, Any], saver: LiveSaver) -> Outcome:
    if saver.failure is not None:
        return Outcome(job_id, "FAILED", error=parse_error(saver.failure))
    if status == "COMPLETED" and saver.result is not None:
        return Outcome(job_id, status, saver.result)
    if "error" in answer:
        return Outcome(job_id, "FAILED" if status == "COMPLETED" else status, error=parse_error(answer["error"]))
    final = backend.status(job_id)  # a stream that ended without its result (not in stream mode, or failed)
    output = final.get("output")
    if isinstance(output, list) and output and isinstance(output[-1], dict):
        output = output[-1]
    status = str(final.get("status", status))
    error = parse_error(final["error"]) if status == "FAILED" and "error" in final else None
    return Outcome(job_id, status, output if status == "COMPLETED" else None, error)
