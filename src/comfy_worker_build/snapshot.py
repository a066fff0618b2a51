"""Restore custom nodes from a ComfyUI-Manager snapshot into ComfyUI's own interpreter.

The snapshot format is ComfyUI-Manager's (JSON or YAML)::

    comfyui: <commit>                                  # the ComfyUI the snapshot was taken on
    git_custom_nodes: {<git url>: {hash: <commit>, disabled: false}}
    cnr_custom_nodes: {<registry id>: <version>}       # Comfy Registry nodes
    file_custom_nodes: [{filename: x.py, disabled: false}]
    pips: {<requirement spec>: ""}

Restoring happens in two phases: :func:`build_plan` turns a snapshot into a :class:`RestorePlan`, a list
of commands that can be printed, checked and tested, and :func:`run_plan` executes it. Every pip install
runs with ComfyUI's interpreter and a constraints file that pins the torch stack already installed, so
no custom node can swap the CUDA build of torch.

Single-file nodes cannot travel inside a snapshot; put them in ``<snapshot dir>/files/<filename>``.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote, urlsplit

import requests
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

log = logging.getLogger(__name__)

# The CUDA stack comes from the base image; snapshots taken on other machines must not replace it.
PROTECTED_PACKAGES = ("torch", "torchvision", "torchaudio", "xformers", "triton")
REGISTRY_URL = "https://api.comfy.org"
SNAPSHOT_SUFFIXES = (".json", ".yaml", ".yml")
# The folder this package is imported from: the restore's own helper runs in ComfyUI's interpreter.
_SRC_DIR = Path(__file__).resolve().parent.parent
_COMMIT = re.compile(r"^[0-9a-f]{7,40}$")
_NODE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_REQUIREMENT_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


class SnapshotError(ValueError):
    """The snapshot cannot be restored; the message names the key."""


class GitNode(BaseModel):
    model_config = ConfigDict(extra="ignore")

    hash: str | None = Field(default=None, description="Commit to check out. None: the default branch.")
    disabled: bool = False

    @field_validator("hash")
    @classmethod
    def _commit(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not _COMMIT.match(value.lower()):
            raise ValueError("must be a git commit hash (7 to 40 hex digits)")
        return value.lower()


class FileNode(BaseModel):
    model_config = ConfigDict(extra="ignore")

    filename: str
    disabled: bool = False

    @field_validator("filename")
    @classmethod
    def _plain_py(cls, value: str) -> str:
        if "/" in value or "\\" in value or not value.endswith(".py") or not _NODE_NAME.match(value):
            raise ValueError("must be a plain `.py` file name")
        return value


class Snapshot(BaseModel):
    """A ComfyUI-Manager snapshot."""

    model_config = ConfigDict(extra="ignore")

    comfyui: str | None = None
    git_custom_nodes: dict[str, GitNode] = Field(default_factory=dict)
    cnr_custom_nodes: dict[str, str] = Field(default_factory=dict)
    file_custom_nodes: list[FileNode] = Field(default_factory=list)
    pips: dict[str, str] = Field(default_factory=dict)

    @field_validator("git_custom_nodes", "cnr_custom_nodes", "pips", "file_custom_nodes", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any, info: Any) -> Any:
        if value is None:
            return [] if info.field_name == "file_custom_nodes" else {}
        return value

    @field_validator("git_custom_nodes")
    @classmethod
    def _git_urls(cls, value: dict[str, GitNode]) -> dict[str, GitNode]:
        names: dict[str, str] = {}
        for url in value:
            name = git_node_name(url)  # raises ValueError naming the URL
            if name.lower() in names:
                raise ValueError(f"{url} and {names[name.lower()]} would both be cloned to custom_nodes/{name}")
            names[name.lower()] = url
        return value

    @field_validator("cnr_custom_nodes")
    @classmethod
    def _cnr_ids(cls, value: dict[str, str]) -> dict[str, str]:
        for name, version in value.items():
            if not _NODE_NAME.match(name):
                raise ValueError(f"{name!r} is not a registry node id")
            if not isinstance(version, str) or not re.match(r"^[A-Za-z0-9][A-Za-z0-9.+_-]{0,63}$", version):
                raise ValueError(f"{name}: version {version!r} is not a version string")
        return value

    @field_validator("pips")
    @classmethod
    def _specs(cls, value: dict[str, str]) -> dict[str, str]:
        for spec in value:
            if not spec.strip() or spec.lstrip().startswith("-"):
                raise ValueError(f"{spec!r} is not a requirement (pip options are not allowed)")
        return value

    def enabled_node_names(self) -> list[str]:
        """Module names ComfyUI will report (`python_module` = `custom_nodes.<name>`) once restored."""
        names = [git_node_name(url) for url, node in self.git_custom_nodes.items() if not node.disabled]
        names += list(self.cnr_custom_nodes)
        names += [PurePosixPath(f.filename).stem for f in self.file_custom_nodes if not f.disabled]
        return names


class Step(BaseModel):
    """One command of a restore plan."""

    model_config = ConfigDict(frozen=True)

    description: str
    argv: list[str]
    cwd: str | None = None
    only_if_exists: str | None = Field(default=None, description="Skip the step when this path is absent "
                                       "(a node without requirements.txt or install.py).")
    env: dict[str, str] = Field(default_factory=dict)


class RestorePlan(BaseModel):
    steps: list[Step] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    node_names: list[str] = Field(default_factory=list)


# --- loading -----------------------------------------------------------------------------------------


def git_node_name(url: str) -> str:
    """The folder a git node is cloned into: the repository name without `.git`."""
    parts = urlsplit(url)
    if parts.scheme not in {"https", "http", "ssh", "git"} or not parts.netloc:
        raise ValueError(f"{url}: not a git URL (https://, ssh:// or git://)")
    name = PurePosixPath(parts.path.rstrip("/")).name.removesuffix(".git")
    if not _NODE_NAME.match(name):
        raise ValueError(f"{url}: no usable repository name in the URL")
    return name


def parse_snapshot(data: Any, source: str) -> Snapshot:
    if not isinstance(data, dict):
        raise SnapshotError(f"{source}: a snapshot is a mapping with `git_custom_nodes`, `cnr_custom_nodes`, "
                            "`file_custom_nodes` and `pips`")
    unknown = sorted(set(data) - set(Snapshot.model_fields))
    if unknown:
        log.warning("%s: ignoring keys this restorer does not know: %s", source, ", ".join(unknown))
    try:
        return Snapshot.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            where = "".join(f"[{part!r}]" if isinstance(part, (int, str)) and i else str(part)
                            for i, part in enumerate(err["loc"]))
            problems.append(f"{where}: {str(err['msg']).removeprefix('Value error, ')}")
        raise SnapshotError(f"{source}: " + "; ".join(problems)) from None


def find_snapshot(path: Path) -> Path:
    """The snapshot file itself, or the single snapshot file inside a folder."""
    if path.is_file():
        return path
    if not path.is_dir():
        raise SnapshotError(f"{path}: no such snapshot file or folder")
    found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in SNAPSHOT_SUFFIXES)
    if len(found) != 1:
        names = ", ".join(p.name for p in found) or "none"
        raise SnapshotError(f"{path}: expected exactly one snapshot file (.json/.yaml), found {names}")
    return found[0]


def load_snapshot(path: Path) -> Snapshot:
    path = find_snapshot(path)
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise SnapshotError(f"{path}: cannot be parsed: {exc}") from None
    return parse_snapshot(data, str(path))


# --- planning ----------------------------------------------------------------------------------------


def build_plan(snapshot: Snapshot, comfyui_dir: Path, python: str, *, snapshot_dir: Path | None = None,
               pinned_comfyui: str | None = None, constraints: Path | None = None,
               registry_url: str = REGISTRY_URL) -> RestorePlan:
    """The commands that restore ``snapshot`` into ``comfyui_dir``; checks everything it can beforehand."""
    plan = RestorePlan(node_names=snapshot.enabled_node_names())
    nodes_dir = comfyui_dir / "custom_nodes"
    constraints = constraints or Path(tempfile.gettempdir()) / "comfy-worker-constraints.txt"
    own_env = {"PYTHONPATH": str(_SRC_DIR)}
    pip = [python, "-m", "pip", "install", "--disable-pip-version-check", "-c", str(constraints)]

    if snapshot.comfyui and pinned_comfyui and not pinned_comfyui.startswith(snapshot.comfyui) \
            and not snapshot.comfyui.startswith(pinned_comfyui):
        plan.warnings.append(f"comfyui: the snapshot was taken on ComfyUI {snapshot.comfyui}, the image pins "
                             f"{pinned_comfyui}; the pinned version is used")
    plan.steps.append(Step(description="pin the installed torch stack for every later pip install",
                           argv=[python, "-m", "comfy_worker_build.snapshot", "constraints", "--out",
                                 str(constraints)], env=own_env))

    def node_setup(name: str, dest: Path) -> None:
        plan.steps.append(Step(description=f"{name}: install requirements.txt",
                               argv=[*pip, "-r", str(dest / "requirements.txt")],
                               only_if_exists=str(dest / "requirements.txt")))
        plan.steps.append(Step(description=f"{name}: run install.py", argv=[python, "install.py"],
                               cwd=str(dest), only_if_exists=str(dest / "install.py")))

    for url, node in snapshot.git_custom_nodes.items():
        name = git_node_name(url)
        if node.disabled:
            plan.warnings.append(f"git_custom_nodes[{url!r}]: disabled in the snapshot; not installed")
            continue
        dest = nodes_dir / name
        plan.steps.append(Step(description=f"{name}: clone {url}",
                               argv=["git", "clone", "--quiet", "--recursive", url, str(dest)]))
        if node.hash:
            plan.steps.append(Step(description=f"{name}: check out {node.hash}",
                                   argv=["git", "-C", str(dest), "checkout", "--quiet", node.hash]))
            plan.steps.append(Step(description=f"{name}: sync submodules",
                                   argv=["git", "-C", str(dest), "submodule", "update", "--init",
                                         "--recursive", "--quiet"]))
        else:
            plan.warnings.append(f"git_custom_nodes[{url!r}].hash: not set; the default branch is used, "
                                 "so rebuilds may differ")
        node_setup(name, dest)

    for name, version in snapshot.cnr_custom_nodes.items():
        dest = nodes_dir / name
        plan.steps.append(Step(description=f"{name}: fetch {version} from the Comfy Registry",
                               argv=[python, "-m", "comfy_worker_build.snapshot", "fetch-cnr", "--id", name,
                                     "--version", version, "--dest", str(dest), "--registry", registry_url],
                               env=own_env))
        node_setup(name, dest)

    for index, file_node in enumerate(snapshot.file_custom_nodes):
        if file_node.disabled:
            plan.warnings.append(f"file_custom_nodes[{index}] ({file_node.filename}): disabled; not installed")
            continue
        source = (snapshot_dir or Path(".")) / "files" / file_node.filename
        if not source.is_file():
            raise SnapshotError(f"file_custom_nodes[{index}].filename: {file_node.filename} is not in "
                                f"{source.parent} (single-file nodes must be shipped beside the snapshot)")
        plan.steps.append(Step(description=f"{file_node.filename}: copy single-file node",
                               argv=["cp", str(source), str(nodes_dir / file_node.filename)]))

    specs = []
    for spec in snapshot.pips:
        match = _REQUIREMENT_NAME.match(spec)
        package = match.group(1).lower().replace("_", "-") if match else ""
        if package in PROTECTED_PACKAGES:
            plan.warnings.append(f"pips[{spec!r}]: skipped; the image's CUDA build of {package} is kept")
            continue
        specs.append(spec)
    if specs:
        plan.steps.append(Step(description=f"install {len(specs)} pinned pip package(s)", argv=[*pip, *specs]))
    return plan


def run_plan(plan: RestorePlan, runner: Callable[..., Any] = subprocess.run) -> None:
    """Execute a plan step by step; the first failing step stops it with an error naming the step."""
    for warning in plan.warnings:
        log.warning("%s", warning)
    for number, step in enumerate(plan.steps, 1):
        if step.only_if_exists and not Path(step.only_if_exists).exists():
            log.debug("step %d skipped (%s absent): %s", number, step.only_if_exists, step.description)
            continue
        log.info("step %d/%d: %s", number, len(plan.steps), step.description)
        env = {**os.environ, **step.env}
        if "PYTHONPATH" in step.env and os.environ.get("PYTHONPATH"):
            env["PYTHONPATH"] = step.env["PYTHONPATH"] + os.pathsep + os.environ["PYTHONPATH"]
        result = runner(step.argv, cwd=step.cwd, env=env, check=False)
        if result.returncode != 0:
            raise SnapshotError(f"step {number} failed (exit {result.returncode}): {step.description}: "
                                f"{' '.join(step.argv)}")


# --- helpers run as plan steps -----------------------------------------------------------------------


def write_constraints(out: Path, packages: Sequence[str] = PROTECTED_PACKAGES) -> list[str]:
    """Pin every installed package of the torch stack (in the running interpreter) to its version."""
    pins = []
    for package in packages:
        try:
            pins.append(f"{package}=={metadata.version(package)}")
        except metadata.PackageNotFoundError:
            continue
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(f"{pin}\n" for pin in pins), encoding="utf-8")
    return pins


def fetch_cnr_node(node_id: str, version: str, dest: Path, registry_url: str = REGISTRY_URL,
                   timeout: float = 60.0) -> None:
    """Download a Comfy Registry node version (a zip) and unpack it into ``dest``."""
    info_url = f"{registry_url.rstrip('/')}/nodes/{quote(node_id)}/install?version={quote(version)}"
    response = requests.get(info_url, timeout=timeout)
    if response.status_code != 200:
        raise SnapshotError(f"cnr_custom_nodes[{node_id!r}]: the registry answered HTTP {response.status_code} "
                            f"for version {version}")
    download_url = response.json().get("downloadUrl")
    if not download_url:
        raise SnapshotError(f"cnr_custom_nodes[{node_id!r}]: the registry gave no download URL for {version}")
    archive = requests.get(download_url, timeout=timeout)
    if archive.status_code != 200:
        raise SnapshotError(f"cnr_custom_nodes[{node_id!r}]: download failed with HTTP {archive.status_code}")
    try:
        bundle = zipfile.ZipFile(io.BytesIO(archive.content))
    except zipfile.BadZipFile:
        raise SnapshotError(f"cnr_custom_nodes[{node_id!r}]: the download is not a zip archive") from None
    staging = Path(tempfile.mkdtemp(prefix=f"cnr-{node_id}-", dir=dest.parent if dest.parent.is_dir() else None))
    try:
        root = staging.resolve()
        for member in bundle.infolist():
            target = (staging / member.filename).resolve()
            if root != target and root not in target.parents:
                raise SnapshotError(f"cnr_custom_nodes[{node_id!r}]: archive entry {member.filename!r} "
                                    "points outside the node folder")
        bundle.extractall(staging)
        if dest.exists():
            shutil.rmtree(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staging), str(dest))
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    log.info("registry node %s %s unpacked into %s", node_id, version, dest)


# --- command line ------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO").upper(),
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    parser = argparse.ArgumentParser(prog="python -m comfy_worker_build.snapshot")
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("plan", "restore"):
        sub = commands.add_parser(name, help=f"{name} a snapshot")
        sub.add_argument("--snapshot", type=Path, required=True, help="snapshot file, or a folder with one")
        sub.add_argument("--comfyui-dir", type=Path, required=True)
        sub.add_argument("--python", default=sys.executable, help="ComfyUI's interpreter")
        sub.add_argument("--pinned-comfyui", default=None, help="the ComfyUI commit or version of the image")
        sub.add_argument("--registry", default=REGISTRY_URL)
    constraints = commands.add_parser("constraints", help="write pins of the installed torch stack")
    constraints.add_argument("--out", type=Path, required=True)
    cnr = commands.add_parser("fetch-cnr", help="unpack one Comfy Registry node")
    cnr.add_argument("--id", required=True)
    cnr.add_argument("--version", required=True)
    cnr.add_argument("--dest", type=Path, required=True)
    cnr.add_argument("--registry", default=REGISTRY_URL)
    args = parser.parse_args(argv)
    try:
        if args.command == "constraints":
            pins = write_constraints(args.out)
            log.info("constraints: %s", ", ".join(pins) or "(no torch stack installed)")
            return 0
        if args.command == "fetch-cnr":
            fetch_cnr_node(args.id, args.version, args.dest, args.registry)
            return 0
        snapshot_file = find_snapshot(args.snapshot)
        plan = build_plan(load_snapshot(snapshot_file), args.comfyui_dir, args.python,
                          snapshot_dir=snapshot_file.parent, pinned_comfyui=args.pinned_comfyui,
                          registry_url=args.registry)
        if args.command == "plan":
            sys.stdout.write(plan.model_dump_json(indent=1) + "\n")
            return 0
        run_plan(plan)
        log.info("snapshot restored: %d custom node(s)", len(plan.node_names))
        return 0
    except (SnapshotError, requests.RequestException) as exc:
        log.error("%s", exc)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
