"""Models a request names by URL, found in the job: its `models` list, and URLs given as the value of a loader's
model input (`"LoraLoader.lora_name": "https://..."`). Each becomes one `UrlModelRef` with every graph input that
must name the fetched file; the graphs are pointed at the files once they are fetched. Pure: no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from ..errors import WorkerError, invalid_input
from ..schema import ModelSource
from . import catalogue as cat
from .models import FOLDER_ALIASES, model_folder
from .overrides import resolve_key

URL_PREFIXES = ("https://", "http://", "s3://")


@dataclass(frozen=True)
class ModelInput:
    """A node input whose value names a model file, and the model folder it is looked up in."""

    node_id: str
    input_name: str
    folder: str
    value: Any


@dataclass
class UrlModelRef:
    """One model file to fetch: where the request names it (`field`), and the inputs of each graph of the job
    (item index, node id, input name) whose value becomes the fetched file's name."""

    field: str
    url: str
    folder: str
    filename: str | None = None
    sha256: str | None = None
    uses: list[tuple[int, str, str]] = field(default_factory=list)


def is_model_url(value: Any) -> bool:
    return isinstance(value, str) and value[:8].lower().startswith(URL_PREFIXES)


def model_inputs(graph: dict[str, Any], object_info: dict[str, Any],
                 models: dict[str, list[str]] | None = None) -> list[ModelInput]:
    """Every input of the graph that names a model file (per the catalogue and the live model lists)."""
    found = []
    for node_id, node in graph.items():
        info = cat.class_info(object_info, str(node.get("class_type"))) if isinstance(node, dict) else None
        if info is None:
            continue
        inputs = node.get("inputs") or {}
        for spec in cat.expand_inputs(info, inputs):
            if spec.name in inputs and not isinstance(inputs[spec.name], list):
                folder = model_folder(str(node["class_type"]), spec, models)
                if folder is not None:
                    found.append(ModelInput(node_id, spec.name, folder, inputs[spec.name]))
    return found


def url_name(url: str) -> str:
    """The file name a URL's path ends with (`""` when it ends with `/`)."""
    return unquote(urlsplit(url).path.rsplit("/", 1)[-1])


def plan_model_urls(sources: list[ModelSource], graphs: list[dict[str, Any]], item_inputs: list[dict[str, Any]],
                    object_info: dict[str, Any], models: dict[str, list[str]] | None) -> list[UrlModelRef]:
    """The job's model files named by URL, each with the graph inputs to point at it. A `models` entry is used
    by the loader inputs (of its folder) whose value is its file name; a URL as a loader's value by that input.
    The same URL (and folder) named twice is one file."""
    found = [model_inputs(graph, object_info, models) for graph in graphs]
    refs: dict[tuple[str, str], UrlModelRef] = {}
    for index, source in enumerate(sources):
        ref = _listed(index, source, found)
        known = refs.setdefault((ref.url, ref.folder), ref)
        if known is not ref:
            known.uses.extend(ref.uses)
    batch = len(graphs) > 1
    for item, (graph, inputs) in enumerate(zip(graphs, item_inputs)):
        keys = _request_keys(graph, inputs)
        for use in found[item]:
            if not is_model_url(use.value):
                continue
            key = keys.get((use.node_id, use.input_name))
            where = (f"inputs[{item}].{key}" if batch else f"inputs.{key}") if key else \
                f"workflow.{use.node_id}.{use.input_name}"
            ref = refs.setdefault((use.value, use.folder), UrlModelRef(where, use.value, use.folder))
            ref.uses.append((item, use.node_id, use.input_name))
    return list(refs.values())


def _listed(index: int, source: ModelSource, found: list[list[ModelInput]]) -> UrlModelRef:
    """A `models[]` entry and the inputs that name its file, its folder taken from them when not given."""
    name = source.filename or url_name(source.url)
    wanted = FOLDER_ALIASES.get(source.folder, source.folder) if source.folder else None
    uses = [(item, use.node_id, use.input_name, use.folder) for item, inputs in enumerate(found)
            for use in inputs if use.value == name and (wanted is None or use.folder == wanted)]
    if wanted is None:
        folders = sorted({use[3] for use in uses})
        if len(folders) != 1:
            problem = ("needed: no loader input of the workflow names " + repr(name) if not folders else
                       f"needed: {name!r} is named by inputs of the folders {', '.join(folders)}")
            raise invalid_input(f"models[{index}].folder", problem)
        wanted = folders[0]
    return UrlModelRef(f"models[{index}]", source.url, wanted, source.filename, source.sha256,
                       [(item, node_id, input_name) for item, node_id, input_name, _ in uses])


def _request_keys(graph: dict[str, Any], inputs: dict[str, Any]) -> dict[tuple[str, str], str]:
    """(node id, input name) -> the request's `inputs` key that set it."""
    keys = {}
    for key in inputs or {}:
        try:
            keys[resolve_key(graph, key)] = key
        except WorkerError:  # a key that does not resolve was refused when the inputs were applied
            continue
    return keys


def with_model_names(graph: dict[str, Any], names: dict[tuple[str, str], str]) -> dict[str, Any]:
    """A copy of the graph whose model inputs (node id, input name) hold the fetched files' names."""
    out = dict(graph)
    for (node_id, input_name), name in names.items():
        node = out[node_id]
        out[node_id] = {**node, "inputs": {**node.get("inputs", {}), input_name: name}}
    return out
