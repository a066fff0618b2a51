"""What the client sends: a workflow file, input files and `inputs` overrides, turned into a job request."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class UsageError(ValueError):
    """A command-line argument or file the client cannot use; the message says which and why."""


def parse_override(text: str) -> tuple[str, Any]:
    """`"6.text=a cat"` -> ("6.text", "a cat"); values that read as JSON (30, 7.5, true, [1,2]) keep their type."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or "." not in key or key.startswith(".") or key.endswith("."):
        raise UsageError(f"--set {text!r}: expected \"<node id or title>.<input>=<value>\", e.g. \"6.text=a cat\"")
    try:
        value: Any = json.loads(raw)
    except ValueError:
        value = raw
    if isinstance(value, dict):
        value = raw  # an object would be read by the worker as a node link or literal; keep the text
    return key, value


def parse_image(text: str) -> tuple[str, Path]:
    """`"example.png=./cat.png"` -> ("example.png", Path("./cat.png")); `"./cat.png"` uses the file's name."""
    name, sep, path = text.partition("=")
    if not sep:
        name, path = Path(text).name, text
    if not name or not path:
        raise UsageError(f"--image {text!r}: expected \"<name in the workflow>=<file>\"")
    return name, Path(path)


def load_workflow(path: Path) -> dict[str, Any]:
    """A workflow file in API or UI format, or a job file (`{"input": {"workflow": …}}`)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read the workflow file {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise UsageError(f"{path} is not JSON: {exc}") from None
    if isinstance(data, dict) and isinstance(data.get("input"), dict) and "workflow" in data["input"]:
        data = data["input"]["workflow"]
    elif isinstance(data, dict) and isinstance(data.get("workflow"), dict) and "nodes" not in data:
        data = data["workflow"]
    if not isinstance(data, dict) or not data:
        raise UsageError(f"{path} holds no workflow (expected ComfyUI's API or UI format)")
    return data


@dataclass
class JobSpec:
    workflow: dict[str, Any]
    images: dict[str, bytes] = field(default_factory=dict)
    inputs: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_files(cls, workflow: str | Path, *, images: dict[str, str | Path] | None = None,
                   overrides: list[str] | None = None) -> JobSpec:
        spec = cls(load_workflow(Path(workflow)))
        for name, path in (images or {}).items():
            try:
                spec.images[name] = Path(path).read_bytes()
            except OSError as exc:
                raise UsageError(f"--image {name}: cannot read {path}: {exc.strerror or exc}") from None
        for text in overrides or []:
            key, value = parse_override(text)
            spec.inputs[key] = value
        return spec

    def job_input(self) -> dict[str, Any]:
        body: dict[str, Any] = {"workflow": self.workflow}
        if self.images:
            body["images"] = [{"name": name, "image": base64.b64encode(data).decode("ascii")}
                              for name, data in self.images.items()]
        if self.inputs:
            body["inputs"] = dict(self.inputs)
        body.update(self.extra)
        return body
