"""A job's answer, shaped in one place: a completed job's output, a dry run's, and a failure's."""

from __future__ import annotations

from typing import Any

from . import __version__
from .delivery import DeliveryResult
from .errors import ErrorCode, WorkerError
from .schema import JobResult
from .workflow import ResolvedWorkflow


def completed(prompt_id: str, delivered: DeliveryResult, warnings: list[str], seeds: dict[int, dict[str, int]],
              items: list[dict[str, Any]] | None, timings: dict[str, float]) -> dict[str, Any]:
    """The output of a completed job; a batch's also lists its items (`items`) and seeds per item."""
    result = JobResult(prompt_id=prompt_id, outputs=delivered.entries, images=delivered.images, timings=timings,
                       warnings=warnings, worker_version=__version__)
    out = result.model_dump(mode="json", exclude_none=True)
    if seeds:
        out["seeds"] = seeds[0] if items is None else {str(k): v for k, v in seeds.items()}
    if items is not None:
        out["items"] = items
    return out


def dry_run(resolved: list[ResolvedWorkflow], batch: bool, warnings: list[str],
            timings: dict[str, float]) -> dict[str, Any]:
    """What a dry run returns: the graph ComfyUI would get and the pre-flight report; nothing is run."""
    if batch:
        return {"dry_run": True, "items": [{"index": i, **_dry_item(r)} for i, r in enumerate(resolved)],
                "warnings": warnings, "timings": timings, "worker_version": __version__}
    return {"dry_run": True, **_dry_item(resolved[0]), "warnings": warnings, "timings": timings,
            "worker_version": __version__}


def _dry_item(resolved: ResolvedWorkflow) -> dict[str, Any]:
    assert resolved.report is not None
    return {"workflow": resolved.graph, "preflight": resolved.report.to_dict(),
            "media_inputs": [{"node_id": m.node_id, "input_name": m.input_name, "key": m.key}
                             for m in resolved.media],
            "seeds": resolved.seeds, **({"models": resolved.models} if resolved.models else {})}


def failed(err: WorkerError, job_id: str, timings: dict[str, float]) -> dict[str, Any]:
    """A failed job for the runpod SDK: `error` is a JSON string; a GPU fault also asks for a fresh worker."""
    out: dict[str, Any] = {"error": err.to_error_string(job_id, timings, __version__)}
    if err.refresh_worker:
        out["refresh_worker"] = True
    return out


def all_failed(failed: list[tuple[int, str, WorkerError]], count: int) -> WorkerError:
    """A batch whose every item failed fails with the first item's code, naming each item's error (`failed`:
    index, prompt id and error of each item)."""
    first = failed[0][2]
    items = [{"index": index, "prompt_id": prompt_id, **error.payload()} for index, prompt_id, error in failed]
    # The first item's details keep the shape its code has; `items` adds every item's own error.
    return WorkerError(first.code, f"all {count} items of the batch failed; item 0: {first.message}",
                       {**first.details, "items": items},
                       refresh_worker=any(error.refresh_worker for _, _, error in failed))


def timed_out(timeout: float, prompt_ids: list[str], restarted: bool) -> WorkerError:
    return WorkerError(ErrorCode.TIMEOUT, f"the job did not finish within {timeout:g} s; its prompt was stopped"
                       + (" and ComfyUI restarted" if restarted else ""),
                       {"timeout": timeout, "prompt_ids": prompt_ids, "comfyui_restarted": restarted})


def summary(result: dict[str, Any]) -> str:
    """The outputs of a result as one short log item each (never their data or URLs)."""
    items = []
    for entry in result.get("outputs", []):
        size = f" {entry['width']}x{entry['height']}" if entry.get("width") else ""
        where = entry.get("storage") or ("inline" if "data" in entry or "data_in" in entry else "text")
        items.append(f"{entry.get('node_id')}:{entry.get('kind')}{size} {entry.get('filename') or ''} "
                     f"{entry.get('size')}B {where}".replace("  ", " "))
    return "[" + ", ".join(items) + "]"
