"""`python -m comfy_worker_dev.emulator --port P ...`: run the emulator with ComfyUI's command line."""

from .server import main

main()
