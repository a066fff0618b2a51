"""What the client sends: a workflow file, input files and `inputs` overrides, turned into a job request."""

from __future__ import annotations

import base64
import json
import mimetypes
import re
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


# What a deployed workflow's id looks like (the worker's rule): a word, not a file name.
WORKFLOW_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


def parse_param(text: str) -> tuple[str, Any]:
    """`"prompt=a cat"` -> ("prompt", "a cat"); a value that reads as JSON keeps its type (`seed=3`, `scale=0.5`,
    `flag=true`; `'prompt="42"'` is the text 42); a value naming a file is sent as a data URI (media parameters)."""
    name, sep, raw = text.partition("=")
    name = name.strip()
    if not sep or not name:
        raise UsageError(f"--param {text!r}: expected \"<name>=<value>\", e.g. \"prompt=a cat\" or \"image=./cat.png\"")
    path = Path(raw).expanduser()
    if raw and path.is_file():
        mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return name, f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"
    try:
        value: Any = json.loads(raw)
    except ValueError:
        value = raw
    return name, (raw if isinstance(value, (dict, list)) or value is None else value)


def parse_image(text: str) -> tuple[str, Path]:
    """`"example.png=./cat.png"` -> ("example.png", Path("./cat.png")); `"./cat.png"` uses the file's name."""
    name, sep, path = text.partition("=")
    if not sep:
        name, path = Path(text).name, text
    if not name or not path:
        raise UsageError(f"--image {text!r}: expected \"<name in the workflow>=<file>\"")
    return name, Path(path)


_FOLDER = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


def parse_model(text: str) -> dict[str, str]:
    """`"https://host/x.safetensors:loras"` -> {"url": ..., "folder": "loras"}; without `:folder` the worker takes
    the folder of the loader input that names the file. A port (`host:8443/x`) is part of the URL, not a folder."""
    url, sep, folder = text.rpartition(":")
    if not sep or not _FOLDER.match(folder) or "://" not in url:
        url, folder = text, ""
    if not re.match(r"^(https?|s3)://\S+$", url, re.IGNORECASE):
        raise UsageError(f"--model {text!r}: expected \"<https:// or s3:// URL>[:<model folder>]\", e.g. "
                         "\"https://huggingface.co/org/repo/resolve/main/style.safetensors:loras\"")
    return {"url": url, **({"folder": folder} if folder else {})}


# Fields of a RunPod request beside `input` that a job file may carry; the client sends them on.
REQUEST_FIELDS = ("webhook", "policy", "s3Config")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read the workflow file {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise UsageError(f"{path} is not JSON: {exc}") from None


def load_job(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(job input, request fields) of a file: a job file (`{"input": {...}}`, as test_input.json and
    docs/examples/*.request.json), a bare job input (`{"workflow": ..., "images": ...}`), or a workflow in
    ComfyUI's API or UI format. A job file's `input` may be a JSON string, as RunPod callers sometimes send."""
    data = _read_json(path)
    request: dict[str, Any] = {}
    if isinstance(data, dict) and "input" in data:
        request = {key: data[key] for key in REQUEST_FIELDS if key in data}
        data = data["input"]
        if isinstance(data, str):
            try:
                data = json.loads(data)
            except ValueError as exc:
                raise UsageError(f"{path}: `input` is a string that is not JSON: {exc}") from None
        if not isinstance(data, dict) or not ({"workflow", "workflow_id", "list_workflows"} & set(data)):
            raise UsageError(f"{path}: `input` holds no `workflow` (nor a deployed workflow's `workflow_id`)")
        job_input = dict(data)
        if "workflow" not in job_input:
            return job_input, request  # a deployed workflow by name, or the catalogue
    elif isinstance(data, dict) and "workflow_id" in data and "nodes" not in data:
        return dict(data), request
    elif isinstance(data, dict) and "workflow" in data and "nodes" not in data:
        job_input = dict(data)
    else:
        job_input = {"workflow": data}
    workflow = job_input.get("workflow")
    if not workflow or not isinstance(workflow, (dict, str)):
        raise UsageError(f"{path} holds no workflow (expected ComfyUI's API or UI format)")
    return job_input, request


def load_workflow(path: Path) -> dict[str, Any]:
    """Only the workflow of a file `load_job` reads."""
    workflow = load_job(path)[0]["workflow"]
    if isinstance(workflow, str):
        try:
            workflow = json.loads(workflow)
        except ValueError as exc:
            raise UsageError(f"{path}: `workflow` is a string that is not JSON: {exc}") from None
    if not isinstance(workflow, dict) or not workflow:
        raise UsageError(f"{path} holds no workflow (expected ComfyUI's API or UI format)")
    return workflow


@dataclass
class JobSpec:
    """A job input: what a file holds, with command-line images and `--set` values over it."""

    workflow: dict[str, Any] | str | None
    images: dict[str, bytes] = field(default_factory=dict)
    inputs: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    file_images: list[Any] = field(default_factory=list)
    file_inputs: dict[str, Any] | list[Any] | None = None
    request: dict[str, Any] = field(default_factory=dict)
    models: list[dict[str, str]] = field(default_factory=list)  # --model: fetched by URL, after the file's
    workflow_id: str | None = None  # a deployed workflow, run by name with `params`
    params: dict[str, Any] = field(default_factory=dict)
    file_params: dict[str, Any] | list[Any] | None = None

    @classmethod
    def named(cls, workflow_id: str, params: list[str] | None = None) -> JobSpec:
        """A deployed workflow by name; `params` as `--param` gives them (`name=value`)."""
        if not WORKFLOW_ID.match(workflow_id):
            raise UsageError(f"{workflow_id!r} is neither a file nor a deployed workflow's id (letters, digits, "
                             "'_' and '-')")
        spec = cls(None, workflow_id=workflow_id)
        spec.add_params(params or [])
        return spec

    @classmethod
    def listing(cls) -> JobSpec:
        """The job that asks for the catalogue of deployed workflows."""
        return cls(None, extra={"list_workflows": True})

    def add_params(self, params: list[str]) -> None:
        if params and self.workflow_id is None:
            raise UsageError("--param sets a deployed workflow's parameters; a graph takes --set and --image")
        for text in params:
            name, value = parse_param(text)
            self.params[name] = value

    @classmethod
    def from_files(cls, workflow: str | Path, *, images: dict[str, str | Path] | None = None,
                   overrides: list[str] | None = None, models: list[str] | None = None) -> JobSpec:
        job_input, request = load_job(Path(workflow))
        if "workflow" not in job_input:
            if images or overrides:
                raise UsageError(f"{workflow} names a deployed workflow: give its parameters with --param")
            rest = {k: v for k, v in job_input.items() if k not in {"workflow_id", "params"}}
            return cls(None, extra=rest, request=request, workflow_id=job_input.get("workflow_id"),
                       file_params=job_input.get("params"))
        rest = {k: v for k, v in job_input.items() if k not in {"workflow", "images", "inputs"}}
        file_images = job_input.get("images") or []
        if not isinstance(file_images, list):
            raise UsageError(f"{workflow}: `images` must be a list of {{\"name\", \"image\"}}")
        spec = cls(job_input["workflow"], extra=rest, file_images=list(file_images),
                   file_inputs=job_input.get("inputs"), request=request)
        for name, path in (images or {}).items():
            try:
                spec.images[name] = Path(path).read_bytes()
            except OSError as exc:
                raise UsageError(f"--image {name}: cannot read {path}: {exc.strerror or exc}") from None
        for text in overrides or []:
            key, value = parse_override(text)
            spec.inputs[key] = value
        spec.models = [parse_model(text) for text in models or []]
        return spec

    def set_execution(self, **options: Any) -> None:
        """Command-line execution options over the file's `execution_config`."""
        if options:
            current = self.extra.get("execution_config")
            self.extra["execution_config"] = {**(current if isinstance(current, dict) else {}), **options}

    def job_input(self) -> dict[str, Any]:
        if self.workflow is None:
            body = {} if self.workflow_id is None else {"workflow_id": self.workflow_id}
            params = _merged(self.file_params, self.params)
            if params:
                body["params"] = params
            return {**body, **self.extra}
        body: dict[str, Any] = {"workflow": self.workflow}
        # An image given on the command line replaces the file's image of the same name.
        images = [i for i in self.file_images if not (isinstance(i, dict) and i.get("name") in self.images)]
        images += [{"name": name, "image": base64.b64encode(data).decode("ascii")}
                   for name, data in self.images.items()]
        if images:
            body["images"] = images
        inputs = self._merged_inputs()
        if inputs:
            body["inputs"] = inputs
        body.update(self.extra)
        if self.models:
            listed = body.get("models") if isinstance(body.get("models"), list) else []
            body["models"] = [*listed, *self.models]
        return body

    def _merged_inputs(self) -> dict[str, Any] | list[Any] | None:
        """The file's `inputs` with `--set` values over them; in a batch, over every input set."""
        return _merged(self.file_inputs, self.inputs)


def _merged(from_file: dict[str, Any] | list[Any] | None, given: dict[str, Any]) -> dict[str, Any] | list[Any] | None:
    """A file's values with the command line's over them; in a batch, over every set."""
    if isinstance(from_file, list):
        return [{**item, **given} if isinstance(item, dict) else item for item in from_file]
    if isinstance(from_file, dict):
        return {**from_file, **given}
    return dict(given) if given else from_file
