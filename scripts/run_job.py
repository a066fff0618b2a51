"""Run one job (test_input.json by default, or a workflow deployed in workflows/ by its id) through the worker,
exactly as RunPod's local test server does, and save every output to a folder.

    ./scripts/run-job.sh                                  # test_input.json
    ./scripts/run-job.sh invert --param width=256         # the deployed workflow `invert`, by name

ComfyUI: with COMFYUI_DIR (a ComfyUI checkout; COMFYUI_PYTHON = its interpreter) or COMFYUI_URL, the real
one; with neither, the ComfyUI emulator the test suite uses stands in, so the command works anywhere.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from comfy_run import JobSpec, UsageError, outputs_with_data  # noqa: E402
from comfy_worker_dev.localserver import LocalWorkerServer, comfyui_env  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("workflow_id", nargs="?", help="run this deployed workflow (workflows/<id>.yaml) by name "
                        "instead of a job file")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                        help="a parameter of the deployed workflow, e.g. width=256 or image=./cat.png; repeatable")
    parser.add_argument("--input", default=str(ROOT / "test_input.json"), help="job file with an 'input' key")
    parser.add_argument("--out", default=str(ROOT / "outputs"), help="folder for the outputs")
    args = parser.parse_args()

    try:
        job = {"input": JobSpec.named(args.workflow_id, args.param).job_input()} if args.workflow_id else \
            json.loads(Path(args.input).read_text())
    except UsageError as exc:
        parser.error(str(exc))
    if args.workflow_id:
        text = json.dumps(job)
        print(f"request ({len(text.encode())} bytes): {text}", flush=True)
    out_dir = Path(args.out)
    with tempfile.TemporaryDirectory(prefix="comfy-worker-run-") as tmp:
        env, label = comfyui_env(Path(tmp))
        print(f"worker: starting against {label} ...", flush=True)
        log_path = Path(tmp) / "worker.log"
        with open(log_path, "wb") as log_file:
            try:
                with LocalWorkerServer(env, log_file=log_file) as server:
                    print(f"worker: local API server at {server.url}; POST /runsync "
                          f"{args.workflow_id or args.input}", flush=True)
                    answer = server.runsync(job["input"])
            except (RuntimeError, TimeoutError) as exc:
                print(f"worker: {exc}\n--- worker log ---\n{log_path.read_text()[-4000:]}", file=sys.stderr)
                return 2
        status = answer.get("status")
        print(f"status: {status}")
        if status != "COMPLETED":
            error = answer.get("error")
            try:
                error = json.loads(error)
            except (TypeError, ValueError):
                pass
            print(json.dumps(error, indent=2))
            return 1
        output = answer["output"]
        if output.get("workflow_id"):
            print(f"workflow: {output['workflow_id']} version {output['workflow_version']}")
        out_dir.mkdir(parents=True, exist_ok=True)
        for item in outputs_with_data(output):
            size = f"{item.get('width')}x{item.get('height')}" if item.get("width") else ""
            if item.get("data"):
                target = out_dir / item["filename"]
                target.write_bytes(base64.b64decode(item["data"]))
                where = str(target)
            else:
                where = item.get("url") or repr(item.get("text"))
            print(f"  node {item['node_id']:>4}  {item['kind']:<9} {item['mime_type']:<22} {item['size']:>9} B "
                  f"{size:>9}  sha256 {item['sha256'][:12]}  -> {where}")
        print("timings:", json.dumps(output["timings"]))
        for warning in output.get("warnings", []):
            print("warning:", warning)
    return 0


if __name__ == "__main__":
    sys.exit(main())
