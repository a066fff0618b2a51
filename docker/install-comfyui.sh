#!/usr/bin/env bash
# Clone ComfyUI at a pinned commit or tag and install its requirements into the active interpreter.
# Usage: install-comfyui.sh REPO REF DEST
set -euo pipefail
repo="$1"; ref="$2"; dest="$3"
git clone --quiet "$repo" "$dest"
git -C "$dest" checkout --quiet "$ref"
rm -rf "$dest/.git/hooks"
# torch is already installed from the CUDA index; keep that build.
grep -v -E '^(torch|torchvision|torchaudio)([<>=~! ]|$)' "$dest/requirements.txt" > /tmp/comfyui-requirements.txt
python -m pip install -r /tmp/comfyui-requirements.txt
rm -f /tmp/comfyui-requirements.txt
echo "ComfyUI $(git -C "$dest" describe --tags --always) installed in $dest"
