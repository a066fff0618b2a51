#!/usr/bin/env bash
# Sourced by run-job.sh and serve.sh from the repository root: the worker's runtime environment in .venv
# (requirements.txt and the project itself, editable), created with $PYTHON (python3) when missing.
set -euo pipefail
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
