"""RunPod serverless entry point: boots ComfyUI and hands jobs to the pipeline. Wiring only."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

from comfy_worker.app import create_worker  # noqa: E402
from comfy_worker.sdk import usage  # noqa: E402

if __name__ == "__main__":
    if {"-h", "--help"} & set(sys.argv[1:]):
        # Help before anything starts: no ComfyUI is booted to print it.
        sys.stdout.write(usage())
        sys.exit(0)
    # Starts ComfyUI within the start budget; a worker that cannot run jobs ends instead of taking any.
    create_worker().serve()
