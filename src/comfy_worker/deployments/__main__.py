"""Tools for deployed workflows (docs/workflows.md#deployed-workflows).

    python -m comfy_worker.deployments draft workflow.json --object-info object_info.json > workflow.yaml
    python -m comfy_worker.deployments draft workflow.json --comfyui http://127.0.0.1:8188
    python -m comfy_worker.deployments check workflows/ --comfyui http://127.0.0.1:8188
    python -m comfy_worker.deployments docs workflows/            # writes workflows/<id>.md
    python -m comfy_worker.deployments schema workflows/ invert   # the JSON Schema of its params

`draft` writes a first manifest to edit; `check` runs the worker's start-up check against a ComfyUI's
catalogue (and its model lists with --comfyui); `docs --check` exits 1 when a page is stale.
Exit status: 0 success, 1 a workflow is unusable or a page stale, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from ..errors import WorkerError
from ..workflow import Policy
from .check import check_deployment
from .docs import page_path, render_page
from .draft import draft_manifest, render_draft
from .files import Source, read_folder
from .manifest import params_schema

log = logging.getLogger("comfy_worker.deployments")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m comfy_worker.deployments", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    draft = commands.add_parser("draft", help="draft a manifest from a workflow (API or UI format)")
    draft.add_argument("workflow", type=Path)
    check = commands.add_parser("check", help="check every deployed workflow of a folder against a catalogue")
    for sub in (draft, check):
        source = sub.add_mutually_exclusive_group(required=True)
        source.add_argument("--object-info", type=Path, help="a saved GET /object_info answer")
        source.add_argument("--comfyui", metavar="URL", help="a running ComfyUI (its catalogue and model lists)")
    check.add_argument("folder", type=Path)
    docs = commands.add_parser("docs", help="write <id>.md beside each manifest of a folder")
    docs.add_argument("folder", type=Path)
    docs.add_argument("--check", action="store_true", help="only report stale pages (exit 1)")
    schema = commands.add_parser("schema", help="print the JSON Schema of a deployed workflow's params")
    schema.add_argument("folder", type=Path)
    schema.add_argument("id")
    return parser


def _catalogue(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, list[str]] | None]:
    if args.object_info:
        return json.loads(args.object_info.read_text(encoding="utf-8")), None
    from ..comfy.client import ComfyClient

    client = ComfyClient(args.comfyui.rstrip("/"), timeout=30.0)
    try:
        return client.object_info(), {folder: client.models(folder) for folder in client.models_folders()}
    finally:
        client.close()


def _sources(folder: Path) -> list[Source]:
    sources = []
    for item in read_folder(folder):
        if isinstance(item, Source):
            sources.append(item)
        else:
            log.error("%s: %s", item.id, item.error.message)
    return sources


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    args = _parser().parse_args(argv)
    if args.command == "draft":
        catalogue, _ = _catalogue(args)
        workflow = json.loads(args.workflow.read_text(encoding="utf-8"))
        sys.stdout.write(render_draft(draft_manifest(workflow, catalogue), args.workflow.name))
        return 0
    if not args.folder.is_dir():
        log.error("%s is not a folder", args.folder)
        return 2
    if args.command == "schema":
        found = [s for s in _sources(args.folder) if s.id == args.id]
        if not found:
            log.error("no usable deployed workflow %r in %s", args.id, args.folder)
            return 1
        sys.stdout.write(json.dumps(params_schema(found[0].id, found[0].manifest, found[0].version), indent=2) + "\n")
        return 0
    return _check(args) if args.command == "check" else _docs(args)


def _check(args: argparse.Namespace) -> int:
    catalogue, models = _catalogue(args)
    failed = sum(1 for item in read_folder(args.folder) if not isinstance(item, Source))
    for source in _sources(args.folder):
        try:
            deployed = check_deployment(source, catalogue, models=models, input_files=None, policy=Policy())
        except WorkerError as err:
            log.error("%s: unavailable (%s): %s", source.id, err.code.value, err.message)
            failed += 1
            continue
        log.info("%s: ready, version %s, %d parameter(s)", source.id, deployed.version,
                 len(source.manifest.params))
    return 1 if failed else 0


def _docs(args: argparse.Namespace) -> int:
    stale = 0
    for source in _sources(args.folder):
        path, text = page_path(source), render_page(source)
        if path.exists() and path.read_text(encoding="utf-8") == text:
            continue
        stale += 1
        if not args.check:
            path.write_text(text, encoding="utf-8")
        log.info("%s %s", "stale:" if args.check else "wrote", path)
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
