"""The layers of docs/architecture.md hold: import-linter's contracts (pyproject.toml) are all kept."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    result = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=300, check=False)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def _functions(package: Path):  # type: ignore[no-untyped-def]
    import ast

    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield path.relative_to(ROOT), node.name, node.end_lineno - node.lineno + 1  # type: ignore[operator]


def test_the_worker_has_no_function_over_50_lines() -> None:
    long = [f"{path}:{name} ({lines} lines)" for path, name, lines in _functions(ROOT / "src" / "comfy_worker")
            if lines > 50]
    assert long == []


def test_the_job_module_only_runs_the_stages() -> None:
    assert len((ROOT / "src" / "comfy_worker" / "job.py").read_text().splitlines()) <= 300
