#!/usr/bin/env bash
# Sets up the worker's runtime environment and runs test_input.json (or --input FILE) through the worker.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/runtime-venv.sh
exec .venv/bin/python scripts/run_job.py "$@"
