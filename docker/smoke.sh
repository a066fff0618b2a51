#!/usr/bin/env bash
# Fail the build when ComfyUI, a restored custom node or the worker does not load (no GPU needed).
set -euo pipefail
python -m py_compile /worker/handler.py
python -m comfy_worker.image.smoke --comfyui-dir "${COMFYUI_DIR:-/comfyui}" --python /opt/venv/bin/python \
    --snapshot /worker/snapshot ${SMOKE_ARGS:-}
