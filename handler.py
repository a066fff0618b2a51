"""RunPod serverless entry point: boots ComfyUI and hands jobs to the pipeline. Wiring only."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

import runpod  # noqa: E402

from comfy_worker.app import create_worker  # noqa: E402

if __name__ == "__main__":
    runpod.serverless.start(create_worker().config)
