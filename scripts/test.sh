#!/usr/bin/env bash
# Sets up a virtual environment with the test requirements and runs the whole test suite.
# Extra arguments go to pytest (for example: scripts/test.sh -k delivery).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
exec .venv/bin/python -m pytest "$@"
