#!/usr/bin/env bash
# Sets up the worker's runtime environment (.venv, as run-job.sh does) and serves the runpod SDK's local API
# server on http://localhost:8000 (/runsync, /run, /status) with the worker, against the ComfyUI emulator, or a
# real ComfyUI when COMFYUI_DIR (and COMFYUI_PYTHON) are set. Extra arguments: --port N, --host ADDRESS.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/runtime-venv.sh
exec .venv/bin/python -m comfy_worker_dev.serve "$@"
