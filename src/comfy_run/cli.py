"""`python -m comfy_run`: run a workflow file, or a workflow deployed on the worker by name, on a RunPod
endpoint or the local test server."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from .backends import Backend, BackendError, LocalBackend, RunPodBackend
from .display import ProgressDisplay, describe_catalogue, describe_error
from .live import LiveSaver, stream_workflow
from .runner import run_workflow
from .spec import WORKFLOW_ID, JobSpec, UsageError, parse_image, parse_model

log = logging.getLogger("comfy_run")

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_CANCELLED = 0, 1, 2, 130

EPILOG = """examples:
  RUNPOD_API_KEY=... python -m comfy_run workflow.json --endpoint abc123 \\
      --image example.png=./cat.png --set "6.text=a cat" --set "3.steps=30" --out outputs/
  python -m comfy_run lora.json --endpoint abc123 \\
      --model https://huggingface.co/org/repo/resolve/main/style.safetensors:loras
  python -m comfy_run workflow.json --local http://127.0.0.1:8000
  comfy-run test_input.json --local http://localhost:8000      # a job file: its images come along
  comfy-run invert --param width=256 --param image=./cat.png --local http://localhost:8000   # deployed, by name
  comfy-run --list --local http://localhost:8000               # the deployed workflows and their parameters
  comfy-run job.json --endpoint abc123 --stream                # live: previews and outputs as they come

exit codes: 0 completed, 1 failed, 2 bad arguments or endpoint unreachable, 130 cancelled (Ctrl-C)"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="comfy-run", description=__doc__, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workflow", nargs="?",
                        help="a job file ({\"input\": {...}}, e.g. test_input.json or docs/examples/*.request.json: "
                             "its images, inputs, output and execution config are sent too), a workflow in "
                             "ComfyUI's API or UI format (the options below override the file), or the id of a "
                             "workflow deployed on the worker (its parameters with --param)")
    parser.add_argument("--param", action="append", default=[], dest="params", metavar="NAME=VALUE",
                        help="a deployed workflow's parameter, e.g. \"prompt=a cat\", \"seed=3\", "
                             "\"image=./cat.png\" (a file is sent as data); repeatable")
    parser.add_argument("--list", action="store_true", help="list the workflows deployed on the worker")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--endpoint", default=os.environ.get("RUNPOD_ENDPOINT_ID"),
                       help="RunPod endpoint id (default $RUNPOD_ENDPOINT_ID); the key comes from $RUNPOD_API_KEY")
    where.add_argument("--local", metavar="URL", help="the runpod SDK's local test server, e.g. http://127.0.0.1:8000")
    parser.add_argument("--image", action="append", default=[], metavar="NAME=PATH",
                        help="input file uploaded as NAME (the name the workflow refers to); repeatable")
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="NODE.INPUT=VALUE",
                        help="set a node input by node id or title, e.g. \"6.text=a cat\"; repeatable")
    parser.add_argument("--model", action="append", default=[], dest="models", metavar="URL[:FOLDER]",
                        help="a model file the worker fetches by URL before the run (cached for later jobs), e.g. "
                             "https://huggingface.co/org/repo/resolve/main/style.safetensors:loras; the workflow "
                             "names it by its file name; repeatable")
    parser.add_argument("--out", type=Path, default=Path("outputs"), help="folder for the outputs (default outputs/)")
    parser.add_argument("--dry-run", action="store_true", help="only check the workflow; run nothing")
    parser.add_argument("--randomize-seeds", action="store_true", help="give every seed a fresh random value")
    parser.add_argument("--timeout", type=int, metavar="SECONDS", help="RunPod policy.executionTimeout")
    parser.add_argument("--poll", type=float, default=1.0, help="seconds between status checks (default 1)")
    parser.add_argument("--json", action="store_true", help="also print the final status response as JSON")
    parser.add_argument("--stream", action="store_true",
                        help="follow the job through /stream (an endpoint in stream mode, STREAM_MODE): progress "
                             "with node and step, latent previews saved to OUT/previews/ as they come (ask for "
                             "them with output_config.previews), each output written as soon as it is delivered")
    return parser


def make_backend(args: argparse.Namespace) -> Backend:
    if args.local:
        return LocalBackend(args.local)
    if not args.endpoint:
        raise UsageError("say where to run: --endpoint <id> (or $RUNPOD_ENDPOINT_ID), or --local <url>")
    return RunPodBackend(args.endpoint)


def _spec(args: argparse.Namespace) -> JobSpec:
    if args.list:
        return JobSpec.listing()
    if not args.workflow:
        raise UsageError("name a workflow file, or the id of a deployed workflow (--list shows them)")
    if not Path(args.workflow).exists() and WORKFLOW_ID.match(args.workflow):
        if args.image or args.overrides:
            raise UsageError(f"{args.workflow!r} is no file: a deployed workflow takes --param, not --image or --set")
        spec = JobSpec.named(args.workflow, args.params)
        spec.models = [parse_model(text) for text in args.models]
        return spec
    images = dict(parse_image(text) for text in args.image)
    spec = JobSpec.from_files(Path(args.workflow), images=images, overrides=args.overrides, models=args.models)
    spec.add_params(args.params)
    return spec


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        spec = _spec(args)
        spec.set_execution(**({"dry_run": True} if args.dry_run else {}),
                           **({"randomize_seeds": True} if args.randomize_seeds else {}))
        request = dict(spec.request)
        if args.timeout:
            policy = request.get("policy") if isinstance(request.get("policy"), dict) else {}
            request["policy"] = {**policy, "executionTimeout": args.timeout * 1000}
        backend = make_backend(args)
    except (UsageError, BackendError) as exc:
        log.error("error: %s", exc)
        return EXIT_USAGE

    display = ProgressDisplay(sys.stderr)

    def submitted(job_id: str) -> None:
        log.info("job %s submitted to %s", job_id, backend.label)
        if not backend.live_progress:
            log.info("the local server runs the job now and reports no progress until it ends")
        display.update("IN_QUEUE" if backend.live_progress else "IN_PROGRESS")

    saver = LiveSaver(args.out, display) if args.stream else None
    try:
        if saver is not None:
            outcome = stream_workflow(backend, spec, saver, request=request, on_submitted=submitted,
                                      poll_interval=args.poll)
        else:
            outcome = run_workflow(backend, spec, request=request, on_status=display.update,
                                   on_submitted=submitted, poll_interval=args.poll)
    except BackendError as exc:
        log.error("error: %s", exc)
        return EXIT_USAGE
    display.finish(outcome.status)
    if saver is not None and saver.previews:
        log.info("%d preview(s) in %s", len(saver.previews), args.out / "previews")
    if args.json:
        sys.stdout.write(json.dumps({"id": outcome.job_id, "status": outcome.status, "output": outcome.output,
                                     "error": outcome.error}, indent=2) + "\n")
    if outcome.status == "COMPLETED" and "workflows" in (outcome.output or {}):
        for line in describe_catalogue(outcome.output or {}):
            sys.stdout.write(line + "\n")
        return EXIT_OK
    if outcome.status == "COMPLETED":
        early = list(saver.saved.values()) if saver is not None else []
        later = outcome.save(args.out, skip=set(saver.saved) if saver is not None else None)
        for path in later:
            log.info("saved %s", path)
        saved = early + later
        for warning in (outcome.output or {}).get("warnings", []):
            log.warning("warning: %s", warning)
        log.info("COMPLETED: %d output(s) in %s", len(saved), args.out)
        return EXIT_OK
    if outcome.status == "FAILED" and outcome.error is not None:
        for line in describe_error(outcome.error):
            log.error("%s", line)
        return EXIT_FAILED
    if outcome.status == "CANCELLED":
        log.error("CANCELLED: job %s was cancelled", outcome.job_id)
        return EXIT_CANCELLED
    log.error("%s: job %s ended without a result (RunPod's execution timeout or TTL)", outcome.status,
              outcome.job_id)
    return EXIT_FAILED
