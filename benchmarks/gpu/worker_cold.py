"""Boot the worker as its entry point does (`create_worker`) and report when it can take a job.

Run by benchmarks/gpu_run.py in the worker's interpreter with the worker's environment; prints one JSON line
once `create_worker()` has returned, then waits for its standard input to close and shuts ComfyUI down.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

started = time.monotonic()
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

from comfy_worker.app import create_worker  # noqa: E402


def main() -> None:
    app = create_worker()
    runtime = app.comfy
    sys.stdout.write(json.dumps({"ready": app.unfit is None,
                                 "in_process_seconds": round(time.monotonic() - started, 3),
                                 "cold_start": app.cold_start, "boot_error": app.unfit}) + "\n")
    sys.stdout.flush()
    sys.stdin.read()
    if runtime is not None:
        runtime.shutdown()


if __name__ == "__main__":
    main()
