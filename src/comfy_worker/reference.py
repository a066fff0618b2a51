"""Reference tables generated from the code (settings, error catalogue) for the README and docs.

`python -m comfy_worker.reference --write` rewrites the marked blocks in README.md and docs/; a test fails
when they differ from what the code says.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from .errors import CATALOGUE
from .settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def _default(value: object) -> str:
    if value is None or value == "":
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def env_table() -> str:
    rows = ["| Variable | Default | Meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        env = field.json_schema_extra["env"]  # type: ignore[index]
        default = "the worker's Python" if name == "comfyui_python" else _default(field.default)
        rows.append(f"| `{env}` | `{default}` | {field.description} |")
    return "\n".join(rows)


def error_table() -> str:
    rows = ["| Code | Retryable | Meaning | What to do |", "|---|---|---|---|"]
    for code, info in CATALOGUE.items():
        rows.append(f"| `{code.value}` | {'yes' if info.retryable else 'no'} | {info.meaning} | {info.action} |")
    return "\n".join(rows)


def _type_name(annotation: object) -> str:
    text = str(annotation).replace("typing.", "").replace("comfy_worker.schema.", "")
    text = re.sub(r"<class '([^']+)'>", r"\1", text)
    return text.replace("NoneType", "null")


def input_table() -> str:
    """Every field of the job input, nested models flattened to dotted names."""
    from pydantic import BaseModel

    from .schema import JobInput

    rows = ["| Field | Type | Default | Meaning |", "|---|---|---|---|"]

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            annotation = field.annotation
            path = f"{prefix}{name}"
            nested = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
            if nested is not None:
                walk(nested, f"{path}.")
                continue
            default = "required" if field.is_required() else _default(
                field.default_factory() if field.default_factory else field.default)  # type: ignore[call-arg]
            description = (field.description or "").replace("\n", " ").replace("|", "\\|")
            type_name = _type_name(annotation).replace(" | ", " or ")
            rows.append(f"| `{path}` | `{type_name}` | `{default}` | {description} |")

    walk(JobInput, "")
    return "\n".join(rows)


BLOCKS = {"env": env_table, "errors": error_table, "input": input_table}


def render(text: str) -> str:
    for name, make in BLOCKS.items():
        pattern = re.compile(rf"(<!-- BEGIN {name} -->).*?(<!-- END {name} -->)", re.DOTALL)
        text = pattern.sub(lambda m: f"{m.group(1)}\n{make()}\n{m.group(2)}", text)
    return text


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", action="store_true", help="rewrite the blocks in place")
    args = parser.parse_args()
    stale = []
    for path in documents():
        if not path.exists():
            continue
        text = path.read_text()
        new = render(text)
        if new != text:
            stale.append(path)
            if args.write:
                path.write_text(new)
    for path in stale:
        print(f"{'updated' if args.write else 'stale'}: {path.relative_to(ROOT)}")
    return 1 if stale and not args.write else 0


if __name__ == "__main__":
    sys.exit(main())
