#!/usr/bin/env bash
# Sets up a virtual environment with the test requirements and runs the whole test suite.
# Extra arguments go to pytest (for example: scripts/test.sh -k delivery).
# Tests run on one process per core (TEST_WORKERS=auto; 0 for a single process).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
# The project itself, editable: `comfy-run`, `python -m comfy_run` and the dev tools work in .venv.
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
# The docs' Mermaid diagrams are checked with Mermaid's own parser, which runs in node.
if ! command -v npm >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
if [ ! -f tools/mermaid-check/node_modules/mermaid/package.json ]; then
    npm ci --prefix tools/mermaid-check --no-audit --no-fund --loglevel=error
fi
# One test process per core (pytest-xdist); TEST_WORKERS=0 runs in this process, `-n N` given here wins.
exec .venv/bin/python -m pytest -n "${TEST_WORKERS:-auto}" "$@"
