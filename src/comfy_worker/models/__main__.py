"""Command line for model manifests.

    python -m comfy_worker.models download --manifest models.yaml --models-root /comfyui/models --when build
    python -m comfy_worker.models verify   --manifest models.yaml --models-root /comfyui/models --when build
    python -m comfy_worker.models list     --manifest models.yaml

Exit status: 0 success, 1 a file failed, 2 the manifest is unusable.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from .download import DownloadError, DownloadOptions, ensure_models, verify_file
from .manifest import FetchWhen, ManifestError, ModelEntry, load_manifest

log = logging.getLogger("comfy_worker.models")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m comfy_worker.models", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (("download", "fetch missing files and verify them"),
                       ("verify", "check present files against the manifest, without network"),
                       ("list", "print the entries")):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("--manifest", type=Path, default=Path(os.environ.get("MODELS_MANIFEST", "models.yaml")))
        sub.add_argument("--when", choices=[w.value for w in FetchWhen], action="append",
                         help="only entries fetched at this moment (repeatable; default: all)")
        if name != "list":
            sub.add_argument("--models-root", type=Path, required=True,
                             help="folder holding ComfyUI's model folders (`<root>/<folder>/<filename>`)")
        if name == "download":
            sub.add_argument("--workers", type=int, default=4, help="parallel downloads")
            sub.add_argument("--retries", type=int, default=4, help="retries per file after a failure")
            sub.add_argument("--timeout", type=float, default=60.0, help="read timeout in seconds")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO").upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    args = _parser().parse_args(argv)
    try:
        manifest = load_manifest(args.manifest)
    except ManifestError as exc:
        log.error("%s", exc)
        return 2
    entries = manifest.select(*(FetchWhen(w) for w in args.when or []))
    if args.command == "list":
        for entry in entries:
            sys.stdout.write(f"{entry.fetch.value}\t{entry.folder}/{entry.filename}\t{entry.sha256}\n")
        return 0
    if args.command == "verify":
        return _verify(entries, args.models_root)
    options = DownloadOptions(workers=args.workers, retries=args.retries, read_timeout=args.timeout)
    try:
        results = ensure_models(entries, args.models_root, options=options)
    except DownloadError as exc:
        for failure in exc.failures:
            log.error("FAILED %s (%s): %s", failure.label, failure.url, failure.reason)
        return 1
    fetched = sum(1 for r in results if r.bytes_transferred)
    log.info("%d model file(s) ready below %s (%d fetched now)", len(results), args.models_root, fetched)
    return 0


def _verify(entries: Sequence[ModelEntry], root: Path) -> int:
    failed = 0
    for entry in entries:
        problem = verify_file(entry, root)
        if problem:
            failed += 1
            log.error("FAILED %s: %s", entry.label, problem)
    log.info("%d of %d model file(s) verified below %s", len(entries) - failed, len(entries), root)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
