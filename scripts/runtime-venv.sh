#!/usr/bin/env bash
# Sourced from the repository root by run-job.sh, serve.sh and test.sh: .venv with $VENV_REQUIREMENTS
# (requirements.txt unless the caller names another) and the project itself, editable; the venv is created with
# $PYTHON (python3) when missing. pip runs only when those files changed since this set-up last ran.
set -euo pipefail
PYTHON="${PYTHON:-python3}"
VENV_REQUIREMENTS="${VENV_REQUIREMENTS:-requirements.txt}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
stamp_file=".venv/.set-up-from-$VENV_REQUIREMENTS"
stamp="$(cat "$VENV_REQUIREMENTS" requirements.txt pyproject.toml src/comfy_worker/__init__.py | .venv/bin/python -c \
    'import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())')"
if [ "$(cat "$stamp_file" 2>/dev/null)" != "$stamp" ]; then
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -r "$VENV_REQUIREMENTS"
    # The project, editable: `comfy-run` and `python -m comfy_run` work in .venv.
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
    echo "$stamp" > "$stamp_file"
fi
