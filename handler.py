"""RunPod serverless entry point: boots ComfyUI and hands jobs to the pipeline. Wiring only."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

from comfy_worker.app import create_worker  # noqa: E402

if __name__ == "__main__":
    app = create_worker()  # starts ComfyUI, importing the runpod SDK meanwhile
    import runpod

    runpod.serverless.start(app.config)
