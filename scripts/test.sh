#!/usr/bin/env bash
# Sets up a virtual environment with the test requirements and runs the whole test suite.
# Extra arguments go to pytest (for example: scripts/test.sh -k delivery).
# Tests run on two processes per core (TEST_WORKERS=N to choose; 0 for a single process).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV_REQUIREMENTS=requirements-dev.txt . scripts/runtime-venv.sh
# The docs' Mermaid diagrams are checked with Mermaid's own parser, which runs in node.
if ! command -v npm >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
if [ ! -f tools/mermaid-check/node_modules/mermaid/package.json ]; then
    npm ci --prefix tools/mermaid-check --no-audit --no-fund --loglevel=error
fi
# Much of a test's time is spent waiting on the processes and servers it started: two test processes per core
# (pytest-xdist); an idle one takes tests queued for a busy one (worksteal). TEST_WORKERS=0 runs in this
# process; `-n N` given here wins.
workers="${TEST_WORKERS:-$(.venv/bin/python -c 'import os
print(2 * (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))')}"
exec .venv/bin/python -m pytest -n "$workers" --dist worksteal "$@"
