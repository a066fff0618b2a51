"""Where the repository is, for tools that read or write its files (docs, schemas, examples, handler.py).

Found from the working directory upwards, by the files that mark the repository's root, so a tool run
from anywhere inside the checkout works and a tool run from outside says so instead of guessing."""

from __future__ import annotations

from pathlib import Path

MARKERS = ("handler.py", "pyproject.toml", "docs")


def repo_root(start: Path | None = None) -> Path:
    """The nearest folder at or above `start` (default: the working directory) holding handler.py,
    pyproject.toml and docs/."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if all((folder / marker).exists() for marker in MARKERS):
            return folder
    raise FileNotFoundError(f"not inside the worker's repository (no folder at or above {here} holds "
                            f"{', '.join(MARKERS)}): run this from the repository")


def import_root(module_file: str) -> Path:
    """The sys.path folder a top-level package was imported from, given a module file of that package's
    top level (its __init__.py): what a child process needs on its PYTHONPATH to import it too."""
    return Path(module_file).resolve().parent.parent
