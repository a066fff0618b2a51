#!/usr/bin/env bash
# Install the torch stack at the pins (docker/pins.env; TORCH_* variables already set win) into the
# active interpreter, from TORCH_INDEX_URL only, so that no other index can supply a different build.
# Usage: install-torch.sh
set -euo pipefail
. "$(dirname "$0")/pins.sh"
python -m pip install \
    "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}" "torchaudio==${TORCHAUDIO_VERSION}" \
    --index-url "${TORCH_INDEX_URL}"
