#!/usr/bin/env bash
# Fail the build when ComfyUI, a restored custom node or the worker does not load, or when the image's
# default command cannot run test_input.json (no GPU needed: everything runs on the CPU).
# Paths default to the image's; scripts/rehearse-image.sh runs this very script with its own.
# Extra arguments of the smoke test (e.g. --allow-no-nodes NAME) come from SMOKE_ARGS.
set -euo pipefail
WORKER_DIR="${WORKER_DIR:-/worker}"
COMFYUI_DIR="${COMFYUI_DIR:-/comfyui}"
PYTHON="${PYTHON:-/opt/venv/bin/python}"
read -r -a smoke_args <<< "${SMOKE_ARGS:-}"

"$PYTHON" -m py_compile "$WORKER_DIR/handler.py"
PYTHONPATH="$WORKER_DIR/src" "$PYTHON" -m comfy_worker_build.smoke --comfyui-dir "$COMFYUI_DIR" \
    --python "$PYTHON" --snapshot "$WORKER_DIR/snapshot" --worker-dir "$WORKER_DIR" "${smoke_args[@]}"
