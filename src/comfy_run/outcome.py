"""A finished job as the client sees it, and saving its outputs under their original names."""

from __future__ import annotations

import base64
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

log = logging.getLogger("comfy_run")


def parse_error(error: Any) -> dict[str, Any]:
    """A FAILED job's `error` (a string of JSON) as an object with at least `code` and `message`."""
    if isinstance(error, dict):
        payload = error
    else:
        try:
            payload = json.loads(error) if isinstance(error, str) else None
        except ValueError:
            payload = None
    if not isinstance(payload, dict):
        return {"code": "UNKNOWN", "message": str(error), "retryable": False, "details": {}}
    if "code" not in payload and "error_message" in payload:
        # The runpod SDK's own exception report.
        return {"code": "INTERNAL_ERROR", "message": f"{payload.get('error_type', 'error')}: "
                f"{payload['error_message']}", "retryable": True, "details": payload}
    payload.setdefault("code", "UNKNOWN")
    payload.setdefault("message", "")
    payload.setdefault("details", {})
    return payload


def _unique(folder: Path, name: str) -> Path:
    path = folder / name
    stem, suffix, n = path.stem, path.suffix, 1
    while path.exists():
        path = folder / f"{stem}-{n}{suffix}"
        n += 1
    return path


_DATA_IN = re.compile(r"^images\[(\d+)\]$")


def entry_data(output: dict[str, Any], entry: dict[str, Any]) -> str | None:
    """An output's base64: in the entry, or in the `images` entry its `data_in` names (images travel once)."""
    if entry.get("data") is not None:
        return str(entry["data"])
    match = _DATA_IN.match(str(entry.get("data_in") or ""))
    images = output.get("images") or []
    if match and int(match.group(1)) < len(images):
        data = images[int(match.group(1))].get("data")
        return str(data) if data is not None else None
    return None


def outputs_with_data(output: dict[str, Any]) -> list[dict[str, Any]]:
    """A result's `outputs`, each inline entry with its base64 in `data` wherever the result keeps it."""
    entries = []
    for entry in output.get("outputs") or []:
        data = entry_data(output, entry)
        entries.append({**entry, "data": data} if data is not None else dict(entry))
    return entries


@dataclass
class Outcome:
    job_id: str
    status: str
    output: Any = None
    error: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.status == "COMPLETED"

    def save(self, folder: str | Path, *, download_timeout: float = 60.0,
             skip: set[tuple[Any, ...]] | None = None) -> list[Path]:
        """Write every output to `folder` (but those whose `output_key` is in `skip`, written already)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        output = self.output if isinstance(self.output, dict) else {}
        saved: list[Path] = []
        if output.get("dry_run"):
            path = _unique(folder, "dry-run.json")
            path.write_text(json.dumps(output, indent=2, ensure_ascii=False))
            return [path]
        for index, entry in enumerate(outputs_with_data(output)):
            if skip is not None and output_key(entry) in skip:
                continue
            path = save_entry(folder, entry, index, download_timeout=download_timeout)
            if path is not None:
                saved.append(path)
        return saved


def output_key(entry: dict[str, Any]) -> tuple[Any, ...]:
    """What names one output across the events and the result of a job."""
    return (entry.get("item"), entry.get("node_id"), entry.get("type"), entry.get("filename"),
            entry.get("text") if entry.get("filename") is None else None)


def save_entry(folder: Path, entry: dict[str, Any], index: int, *, download_timeout: float = 60.0) -> Path | None:
    """Write one output entry to `folder`: base64 `data` decoded, `url` downloaded, `text` as .txt."""
    # Only the name: a result never decides where on this machine a file lands.
    name = Path(entry.get("filename") or "").name
    if entry.get("kind") == "text" or entry.get("text") is not None:
        stem = Path(name).stem or f"{entry.get('node_id')}_{entry.get('key', 'text')}_{index}"
        path = _unique(folder, f"{stem}.txt")
        path.write_text(entry.get("text") or "", encoding="utf-8")
    elif entry.get("data") is not None:
        path = _unique(folder, name or f"output_{index}")
        path.write_bytes(base64.b64decode(entry["data"]))
    elif entry.get("url"):
        path = _unique(folder, name or Path(entry["url"].split("?")[0]).name or f"output_{index}")
        with requests.get(entry["url"], stream=True, timeout=download_timeout) as resp:
            resp.raise_for_status()
            with open(path, "wb") as fh:
                for chunk in resp.iter_content(1 << 20):
                    fh.write(chunk)
    else:
        log.warning("output %d of node %s has no content to save", index, entry.get("node_id"))
        return None
    return path
