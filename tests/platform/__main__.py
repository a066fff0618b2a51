"""Record one run of the worker in production mode and write it as a Mermaid sequence diagram.

    PYTHONPATH=src python -m tests.platform [--input test_input.json] [--node-delay 0.8] [--stop]

The worker runs `python -u handler.py` against the RunPod job API emulator, with the ComfyUI emulator (or a
real ComfyUI with COMFYUI_DIR/COMFYUI_PYTHON). `--node-delay` slows every emulated node so that heartbeats
and progress updates show; `--stop` cancels the job once it runs. The diagram goes to stdout, from the job
being handed out to the next poll after its end.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

from .harness import REPO_ROOT, WorkerProcess
from .server import RunPodPlatform, to_mermaid

log = logging.getLogger("tests.platform")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", default=str(REPO_ROOT / "test_input.json"), help="job file with an 'input' key")
    parser.add_argument("--node-delay", type=float, default=0.8, help="seconds per emulated node (0: none)")
    parser.add_argument("--stop", action="store_true", help="cancel the job once it runs")
    parser.add_argument("--real", action="store_true", help="the ComfyUI of COMFYUI_DIR, not the emulator")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)

    job_input = json.loads(Path(args.input).read_text())["input"]
    with tempfile.TemporaryDirectory(prefix="platform-run-") as tmp, RunPodPlatform() as api, \
            WorkerProcess(api, Path(tmp), real=args.real) as worker:
        worker.wait_polling(300)
        if args.node_delay and not args.real:
            worker.set_emulator_faults(node_delay=args.node_delay)
        job_id = api.enqueue(job_input)
        take = api.wait_taken(job_id, 60)
        if args.stop:
            api.wait_for(lambda: [c for c in api.posts_for(job_id) if c.is_progress], 60, "the job running")
            api.stop_job(job_id)
            api.wait_calls("job-stop", where=lambda c: job_id in c.answered_ids, timeout=30)
            time.sleep(2)  # the worker interrupts ComfyUI and asks for the next job
            end = time.monotonic()
        else:
            api.wait_result(job_id, 600)
            end = api.wait_calls("job-take", where=lambda c: c.t > take.t_answered, timeout=30)[0].t
        log.info("job %s: %s; worker log %s", job_id, api.job_status(job_id), worker.log_path)
        calls = [c for c in api.calls() if take.t <= c.t <= end and c.t_answered is not None]
        sys.stdout.write(to_mermaid(calls, job_names={job_id: "job-1"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
