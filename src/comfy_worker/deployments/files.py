"""The deployment folders: each `<id>.yaml` manifest with its workflow (`<id>.json`, API or UI format), read
from the image's folder and the network volume's, each with its version (a content hash of graph and
manifest)."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ..errors import WorkerError
from ..problems import invalid_workflow, problem
from ..settings import Settings
from .manifest import Manifest

log = logging.getLogger("comfy_worker.deployments")

ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
MANIFEST_SUFFIXES = (".yaml", ".yml")
DRAFT_HINT = "python -m comfy_worker.deployments draft"


@dataclass(frozen=True)
class Source:
    """A deployed workflow as its files hold it: nothing checked against ComfyUI yet."""

    id: str
    manifest: Manifest
    workflow: dict[str, Any]
    version: str
    folder: Path


@dataclass(frozen=True)
class Unreadable:
    """A deployment whose files cannot be used, and why."""

    id: str
    error: WorkerError
    folder: Path


def version_of(workflow: Any, manifest: Any) -> str:
    """The content hash of graph and manifest (as parsed: formatting, key order and YAML comments do not count)."""
    text = json.dumps({"manifest": manifest, "workflow": workflow}, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def broken(what: str, problems: list[dict[str, Any]]) -> WorkerError:
    """INVALID_WORKFLOW from the deployment itself (its files or manifest), in the shape every
    INVALID_WORKFLOW has."""
    return invalid_workflow(what, problems, source="deployment")


def file_problem(kind: str, message: str, details: Any = None) -> dict[str, Any]:
    return problem(None, None, kind, None, message, details)


def deployment_folders(settings: Settings) -> list[Path]:
    """The image's folder, then the network volume's (whose workflows replace the image's of the same id)."""
    volume = settings.deployed_workflows_volume_dir or settings.network_volume_path / "workflows"
    return [settings.deployed_workflows_dir, volume]


def read_folders(folders: list[Path]) -> tuple[list[Source], list[Unreadable]]:
    """Every deployment of the folders that exist, by id; a later folder's replaces an earlier one's."""
    found: dict[str, Source | Unreadable] = {}
    for folder in folders:
        if not folder.is_dir():
            continue
        for item in read_folder(folder):
            if item.id in found:
                log.warning("deployed workflow %r from %s replaces the one from %s", item.id, folder,
                            found[item.id].folder)
            found[item.id] = item
    sources = [s for s in found.values() if isinstance(s, Source)]
    return sources, [u for u in found.values() if isinstance(u, Unreadable)]


def read_folder(folder: Path) -> list[Source | Unreadable]:
    """The deployments of one folder: each manifest with its workflow, and each workflow without a manifest
    (reported, so that a forgotten manifest is noticed)."""
    items: list[Source | Unreadable] = []
    used: set[str] = set()
    for path in sorted(p for p in folder.iterdir() if p.suffix in MANIFEST_SUFFIXES and p.is_file()):
        item = read_deployment(path)
        items.append(item)
        if isinstance(item, Source):
            used.add((item.manifest.workflow or f"{item.id}.json"))
        else:
            used.add(f"{path.stem}.json")
    for path in sorted(folder.glob("*.json")):
        if path.name not in used:
            items.append(Unreadable(path.stem, broken(f"{path.name} has no manifest", [file_problem(
                "missing_manifest", f"{path.name} has no manifest ({path.stem}.yaml) beside it; draft one "
                f"with `{DRAFT_HINT} {path.name}` and edit it")]), folder))
    return items


def read_deployment(manifest_path: Path) -> Source | Unreadable:
    """One manifest and the workflow it names."""
    workflow_id, folder = manifest_path.stem, manifest_path.parent
    if not ID_PATTERN.match(workflow_id):
        return Unreadable(workflow_id, broken(f"{manifest_path.name}: its name is not a usable id", [file_problem(
            "invalid_id", "ids are 1-64 letters, digits, '_' or '-', starting with a letter or digit")]), folder)
    try:
        raw = yaml.safe_load(manifest_path.read_text(encoding="utf-8")) or {}
        manifest = Manifest.model_validate(raw)
    except (OSError, yaml.YAMLError) as exc:
        return Unreadable(workflow_id, broken(f"{manifest_path.name} cannot be read: {exc}",
                                              [file_problem("unreadable_manifest", str(exc))]), folder)
    except ValidationError as exc:
        problems = [file_problem("invalid_manifest", f"{_where(err['loc'])}: {err['msg']}", _where(err["loc"]))
                    for err in exc.errors(include_url=False)]
        return Unreadable(workflow_id, broken(f"{manifest_path.name}: " + "; ".join(
            str(p["message"]) for p in problems[:5]), problems), folder)
    workflow_path = folder / (manifest.workflow or f"{workflow_id}.json")
    try:
        workflow = json.loads(workflow_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return Unreadable(workflow_id, broken(f"{workflow_path.name} cannot be read: {exc}",
                                              [file_problem("unreadable_workflow", str(exc))]), folder)
    if not isinstance(workflow, dict) or not workflow:
        return Unreadable(workflow_id, broken(f"{workflow_path.name} holds no workflow",
                                              [file_problem("unreadable_workflow", "not a workflow object")]), folder)
    return Source(workflow_id, manifest, workflow, version_of(workflow, raw), folder)


def _where(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc) or "manifest"
