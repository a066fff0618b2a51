#!/usr/bin/env bash
# Fetch and verify the `build` entries of models.yaml. Tokens arrive as BuildKit secrets
# (/run/secrets/<NAME>, e.g. HF_TOKEN); each becomes the variable of the same name for this process only.
# Usage: fetch-models.sh MANIFEST MODELS_ROOT
set -euo pipefail
manifest="$1"; root="$2"
if [ -d /run/secrets ]; then
    for secret in /run/secrets/*; do
        [ -s "$secret" ] || continue
        name="$(basename "$secret")"
        [[ "$name" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || continue
        export "$name=$(cat "$secret")"
    done
fi
python -m comfy_worker.models download --manifest "$manifest" --models-root "$root" --when build
python -m comfy_worker.models verify --manifest "$manifest" --models-root "$root" --when build
