"""RunPod serverless entry point: boots ComfyUI and hands jobs to the pipeline. Wiring only."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

from comfy_worker.app import create_worker  # noqa: E402

if __name__ == "__main__":
    # Starts ComfyUI within the start budget; a worker that cannot run jobs ends instead of taking any.
    create_worker().serve()
