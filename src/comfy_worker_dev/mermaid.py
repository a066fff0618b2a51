"""Finds the Mermaid blocks of the docs and parses them with Mermaid's own parser (node + the `mermaid` npm
package, installed from tools/mermaid-check/package-lock.json).

`python -m comfy_worker_dev.mermaid` checks every block of README.md and docs/*.md and exits 1 on a parse error.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .repo import repo_root

log = logging.getLogger("comfy_worker_dev.mermaid")

ROOT = repo_root()
CHECKER = ROOT / "tools" / "mermaid-check"
_BLOCK = re.compile(r"^```mermaid[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)


@dataclass(frozen=True)
class Diagram:
    name: str
    code: str


@dataclass(frozen=True)
class ParseResult:
    name: str
    ok: bool
    type: str | None
    error: str | None


def diagrams_in(text: str, source: str) -> list[Diagram]:
    found = []
    for match in _BLOCK.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        found.append(Diagram(f"{source}:{line}", match.group(1)))
    return found


def documented_diagrams(root: Path = ROOT) -> list[Diagram]:
    out: list[Diagram] = []
    for path in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        if path.exists():
            out.extend(diagrams_in(path.read_text(), str(path.relative_to(root))))
    return out


def ensure_installed(timeout: float = 300.0) -> None:
    """`npm ci` once; a no-op when the pinned packages are already there."""
    if (CHECKER / "node_modules" / "mermaid" / "package.json").exists():
        return
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is not installed: it is needed to check the Mermaid diagrams")
    subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=CHECKER, check=True,
                   timeout=timeout)


def parse(diagrams: list[Diagram], timeout: float = 120.0) -> list[ParseResult]:
    ensure_installed()
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node is not installed: it is needed to check the Mermaid diagrams")
    payload = json.dumps([{"name": d.name, "code": d.code} for d in diagrams])
    proc = subprocess.run([node, "check.mjs"], cwd=CHECKER, input=payload, capture_output=True, text=True,
                          timeout=timeout)
    try:
        raw = json.loads(proc.stdout)
    except ValueError:
        raise RuntimeError(f"the Mermaid checker failed: {proc.stderr.strip()[-2000:]}") from None
    return [ParseResult(r["name"], r["ok"], r["type"], r["error"]) for r in raw]


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    results = parse(documented_diagrams())
    for r in results:
        if r.ok:
            log.info("ok     %s (%s)", r.name, r.type)
        else:
            log.error("FAILED %s: %s", r.name, r.error)
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
