"""What the client shows a person: a progress bar and plain-language failures."""

from __future__ import annotations

import shutil
import time
from typing import Any, TextIO

from comfy_worker.errors import CATALOGUE, ErrorCode


class ProgressDisplay:
    """One updating line on a terminal; one line per change elsewhere (logs, pipes)."""

    def __init__(self, stream: TextIO, *, width: int = 30) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.width = width
        self.started = time.monotonic()
        self._last = ""

    def _bar(self, percent: float) -> str:
        filled = int(round(self.width * max(0.0, min(100.0, percent)) / 100))
        return "[" + "#" * filled + "." * (self.width - filled) + "]"

    def line_for(self, status: str, progress: Any) -> str:
        elapsed = f"{time.monotonic() - self.started:5.0f}s"
        if status == "IN_PROGRESS" and isinstance(progress, dict) and progress.get("stage") == "fetching_models":
            done, total = progress.get("bytes_done") or 0, progress.get("bytes_total")
            size = f"{done / 2**20:.1f} of {total / 2**20:.1f} MiB" if total else f"{done / 2**20:.1f} MiB"
            return (f"{self._bar(progress.get('percent', 0.0))} {progress.get('percent', 0.0):5.1f}% fetching "
                    f"{progress.get('models', 0)} model file(s): {size}  {elapsed}")
        if status == "IN_PROGRESS" and isinstance(progress, dict) and "percent" in progress:
            where = ""
            if progress.get("node"):
                where = f" node {progress['node']}"
                if progress.get("class_type"):
                    where += f" ({progress['class_type']})"
                if progress.get("step") is not None and progress.get("max_steps"):
                    where += f" step {progress['step']:g}/{progress['max_steps']:g}"
            return f"{self._bar(progress['percent'])} {progress['percent']:5.1f}%{where}  {elapsed}"
        label = {"IN_QUEUE": "waiting for a worker", "IN_PROGRESS": "running"}.get(status, status.lower())
        return f"{self._bar(0)}   {label}  {elapsed}"

    def update(self, status: str, progress: Any = None) -> None:
        line = self.line_for(status, progress)
        if self.tty:
            columns = shutil.get_terminal_size((100, 20)).columns
            self.stream.write("\r" + line[: columns - 1].ljust(min(len(self._last), columns - 1)))
            self.stream.flush()
        elif line.rsplit("  ", 1)[0] != self._last.rsplit("  ", 1)[0]:
            self.stream.write(line + "\n")
            self.stream.flush()
        self._last = line

    def finish(self, status: str) -> None:
        if status == "COMPLETED":
            self.update("IN_PROGRESS", {"percent": 100.0})
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def describe_error(payload: dict[str, Any]) -> list[str]:
    """Lines telling a person what failed, where, and what to do about it."""
    code = str(payload.get("code"))
    details = payload.get("details") if isinstance(payload.get("details"), dict) else {}
    lines = [f"FAILED: {code}: {payload.get('message', '')}"]
    if details.get("node_id") is not None:
        node = f"node {details['node_id']}"
        if details.get("class_type"):
            node += f" ({details['class_type']})"
        lines.append(f"  where: {node}")
        if details.get("exception_type") or details.get("exception_message"):
            first = str(details.get("exception_message", "")).strip().splitlines()[:1]
            lines.append(f"  error: {details.get('exception_type', '')}: {first[0] if first else ''}")
    for err in details.get("errors", []) if isinstance(details.get("errors"), list) else []:
        if isinstance(err, dict) and "field" in err:
            lines.append(f"  field {err['field']}: {err.get('problem', '')}")
    for problem in details.get("problems", []) if isinstance(details.get("problems"), list) else []:
        if isinstance(problem, dict):
            where = f"node {problem.get('node_id')} ({problem.get('class_type')})"
            if problem.get("input_name"):
                where += f" input {problem['input_name']}"
            extra = f": {problem['details']}" if problem.get("details") else ""
            lines.append(f"  {where}: {problem.get('message', '')}{extra}")
    for model in details.get("missing_models", []) if isinstance(details.get("missing_models"), list) else []:
        if isinstance(model, dict) and model.get("closest"):
            lines.append(f"  instead of {model.get('name', model.get('value'))}: maybe {', '.join(model['closest'])}")
    for failure in details.get("failures", []) if isinstance(details.get("failures"), list) else []:
        if isinstance(failure, dict):
            lines.append(f"  {failure.get('field')} ({failure.get('url')}): {failure.get('reason')}: "
                         f"{failure.get('message', '')}")
    if code == ErrorCode.COMFYUI_UNAVAILABLE.value:
        lines.append("  ComfyUI's last log lines are in the worker's log, under this job's id")
    try:
        info = CATALOGUE[ErrorCode(code)]
    except ValueError:
        info = None
    if info is not None:
        lines.append(f"  retryable: {'yes' if info.retryable else 'no'}")
        lines.append(f"  what to do: {info.action}")
    return lines


def describe_catalogue(output: dict[str, Any]) -> list[str]:
    """The answer to `list_workflows`: each deployed workflow with its parameters, and those unavailable."""
    lines: list[str] = []
    for workflow in output.get("workflows") or []:
        head = f"{workflow['id']}  (version {workflow.get('version')})  {workflow.get('description', '')}"
        lines.append(head.rstrip())
        schema = workflow.get("params_schema") or {}
        required = set(schema.get("required") or [])
        for name, prop in (schema.get("properties") or {}).items():
            kind = prop.get("x-media") or prop.get("type")
            extra = []
            if name in required:
                extra.append("required")
            if "enum" in prop:
                extra.append("one of " + ", ".join(str(v) for v in prop["enum"]))
            if "minimum" in prop or "maximum" in prop:
                extra.append(f"{prop.get('minimum', '')}..{prop.get('maximum', '')}")
            if "default" in prop and prop.get("x-media") is None:
                extra.append(f"default {prop['default']!r}")
            note = f" [{'; '.join(extra)}]" if extra else ""
            lines.append(f"  --param {name}=<{kind}>{note}  {prop.get('description', '')}".rstrip())
    for broken in output.get("unavailable") or []:
        lines.append(f"{broken['id']}  UNAVAILABLE ({broken.get('code')}): {broken.get('reason')}")
    if not lines:
        lines.append("no workflow is deployed on this worker")
    return lines
