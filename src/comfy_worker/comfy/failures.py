"""What ComfyUI's refusals and failed prompts mean for the caller: INVALID_WORKFLOW with every node problem
named, EXECUTION_ERROR naming node, class type and exception, OUT_OF_MEMORY, and GPU faults that need a
fresh worker."""

from __future__ import annotations

import re
from typing import Any

from ..errors import ErrorCode, WorkerError
from ..problems import flatten_node_errors


def node_label(workflow: dict[str, Any], node_id: str, class_type: str | None = None) -> str:
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
    if not problems:
        problems.append({"node_id": None, "class_type": None, "type": "invalid_prompt", "input_name": None,
                         "message": "ComfyUI refused the prompt without saying why", "details": None})
    parts = []
    for p in problems[:5]:
        where = node_label(workflow, p["node_id"], p["class_type"]) if p["node_id"] else "workflow"
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
                                   f"{node_label(workflow, node_id, class_type)} ran out of GPU memory: "
                                   f"{exc_msg.splitlines()[0] if exc_msg else exc_type}", details)
            first_line = exc_msg.splitlines()[0] if exc_msg else ""
            fatal = _gpu_unusable(exc_type, exc_msg)
            if fatal:
                details["gpu_fault"] = True
            return WorkerError(ErrorCode.EXECUTION_ERROR,
                               f"{node_label(workflow, node_id, class_type)} failed: {exc_type}: {first_line}"
                               + (" (the GPU is in a bad state; this worker will be replaced)" if fatal else ""),
                               details, refresh_worker=fatal)
        if name == "execution_interrupted":
            node_id = str(data.get("node_id"))
            return WorkerError(ErrorCode.CANCELLED,
                               f"ComfyUI interrupted the prompt at {node_label(workflow, node_id, data.get('node_type'))}",
                               {"node_id": node_id, "class_type": data.get("node_type")})
    return WorkerError(ErrorCode.EXECUTION_ERROR, "ComfyUI reported the prompt as failed without an error message",
                       {"node_id": None, "class_type": None, "exception_type": "", "exception_message": "",
                        "traceback": [], "status": status})


def out_of_memory_again(first: WorkerError, freed: bool, attempts: list[str]) -> WorkerError:
    """OUT_OF_MEMORY after the one retry: says what was tried, so the caller knows a plain retry is futile."""
    tried = ("ComfyUI's memory was freed (models unloaded, caches dropped) and the prompt run again"
             if freed else "the prompt was run again (ComfyUI could not be asked to free its memory)")
    return WorkerError(ErrorCode.OUT_OF_MEMORY, f"{first.message}; {tried}, and it ran out of memory again",
                       {**first.details, "retried": True, "memory_freed": freed, "earlier_prompt_ids": attempts},
                       retryable=False)

