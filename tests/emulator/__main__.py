"""`python -m tests.emulator --port P ...`: run the emulator with ComfyUI's command line."""

from .server import main

main()
