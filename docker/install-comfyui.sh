#!/usr/bin/env bash
# Clone ComfyUI at the pinned commit (COMFYUI_REPO, COMFYUI_REF from docker/pins.env; variables already
# set win) and install its requirements into the active interpreter, keeping the torch stack that
# install-torch.sh put there. Fails when the checked-out ComfyUI is not COMFYUI_VERSION, so the version the
# docs and pins name is the one that was built.
# Usage: install-comfyui.sh DEST
set -euo pipefail
. "$(dirname "$0")/pins.sh"
dest="$1"
git clone --quiet --no-checkout "$COMFYUI_REPO" "$dest"
git -C "$dest" checkout --quiet "$COMFYUI_REF"
rm -rf "$dest/.git/hooks"

version="$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$dest/comfyui_version.py")"
if [ "$version" != "$COMFYUI_VERSION" ]; then
    echo "install-comfyui.sh: $COMFYUI_REF is ComfyUI $version, the pins say $COMFYUI_VERSION;" \
        "set COMFYUI_VERSION together with COMFYUI_REF" >&2
    exit 1
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# torch comes from install-torch.sh (its index, its build): left out here, and pinned for every other
# requirement so that none can replace it.
grep -v -E '^(torch|torchvision|torchaudio)([<>=~! ;]|$)' "$dest/requirements.txt" > "$work/requirements.txt"
printf '%s\n' "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}" \
    "torchaudio==${TORCHAUDIO_VERSION}" > "$work/constraints.txt"
python -m pip install -r "$work/requirements.txt" -c "$work/constraints.txt"
echo "ComfyUI $version ($(git -C "$dest" rev-parse --short HEAD)) installed in $dest"
