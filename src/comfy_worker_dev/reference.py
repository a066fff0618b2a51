"""Reference tables generated from the code (settings, error catalogue) for the README and docs.

`python -m comfy_worker_dev.reference --write` rewrites the marked blocks in README.md and docs/ and the JSON
Schemas in docs/schema/; a test fails when they differ from what the code says.

Blocks: `<!-- BEGIN name -->…<!-- END name -->` for the tables below, and
`<!-- BEGIN example NAME -->` (docs/examples/NAME.json as a JSON block) or `<!-- BEGIN error-example NAME -->`
(the parsed `error` of docs/examples/NAME.json), each followed by what recorded it, for the examples that
`python -m tests.apiexamples --write` records from runs of the worker.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from comfy_worker.errors import CATALOGUE, ErrorCode
from comfy_worker.settings import Settings

from . import apispec
from .repo import repo_root

ROOT = repo_root()


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

    from comfy_worker.schema import JobInput

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


EXAMPLES_DIR = ROOT / "docs" / "examples"

# Example messages for the codes that the recorded examples (docs/examples/failed-*.json) do not cover.
ERROR_EXAMPLES: dict[ErrorCode, str] = {
    ErrorCode.INPUT_FETCH_FAILED: "inputs.1.image: could not download https://example.com/in.png: HTTP 404",
    ErrorCode.TIMEOUT: "the job ran longer than its timeout of 300 s and was interrupted",
    ErrorCode.CANCELLED: "the prompt was interrupted before it finished",
    ErrorCode.COMFYUI_UNAVAILABLE: "ComfyUI exited with code 1 during the job",
    ErrorCode.UPLOAD_FAILED: "2 of 4 outputs could not be uploaded to s3://my-bucket/jobs/",
    ErrorCode.OUTPUT_TOO_LARGE: "the result is 31.2 MB, over the 20 MB inline limit, and no storage is configured",
    ErrorCode.OUTPUT_MISSING: "1 output file(s) reported by ComfyUI could not be read",
    ErrorCode.INTERNAL_ERROR: "the worker is misconfigured: COMFYUI_PORT: not a valid integer",
}


# The one key of an example file that is not part of the body the API sends: what recorded it.
RECORDED_WITH = "recorded_with"


def read_example(path: Path) -> tuple[dict[str, object], str | None]:
    """(body as the API sends it, what recorded it) of an example file."""
    data = json.loads(path.read_text())
    note = data.pop(RECORDED_WITH, None)
    return data, note


def load_example(name: str) -> dict[str, object]:
    return read_example(EXAMPLES_DIR / f"{name}.json")[0]


def recorded_error(code: ErrorCode) -> dict[str, object] | None:
    path = EXAMPLES_DIR / f"failed-{code.value}.response.json"
    if not path.exists():
        return None
    return json.loads(str(read_example(path)[0]["error"]))


def error_example(code: ErrorCode) -> tuple[str, bool]:
    """(example message, whether it was recorded from a real run)."""
    recorded = recorded_error(code)
    if recorded is not None:
        return str(recorded["message"]), True
    return ERROR_EXAMPLES[code], False


def error_catalogue_table() -> str:
    rows = ["| Code | Retryable | Meaning | Example `message` | What the caller should do |",
            "|---|---|---|---|---|"]
    for code, info in CATALOGUE.items():
        message, recorded = error_example(code)
        message = message.replace("|", "\\|").replace("\n", " ")
        link = f" ([recorded](examples/failed-{code.value}.response.json))" if recorded else ""
        rows.append(f"| `{code.value}` | {'yes' if info.retryable else 'no'} | {info.meaning} | "
                    f"{message}{link} | {info.action} |")
    return "\n".join(rows)


def schema_table() -> str:
    rows = ["| File | Model | Describes |", "|---|---|---|"]
    for name, model in apispec.SCHEMAS.items():
        doc = (model.__doc__ or "").strip().splitlines()[0]
        rows.append(f"| [`schema/{name}.schema.json`](schema/{name}.schema.json) | `{model.__name__}` | {doc} |")
    return "\n".join(rows)


def _json_block(value: object) -> str:
    return "```json\n" + json.dumps(value, indent=2, ensure_ascii=False) + "\n```"


def _provenance(name: str) -> str:
    note = read_example(EXAMPLES_DIR / f"{name}.json")[1] or "not said"
    return f"<sub>Recorded with: {note} ([file](examples/{name}.json)).</sub>"


def example_block(name: str) -> str:
    return _json_block(load_example(name)) + "\n" + _provenance(name)


def error_example_block(name: str) -> str:
    response = load_example(name)
    return _json_block(json.loads(str(response["error"]))) + "\n" + _provenance(name)


BLOCKS = {"env": env_table, "errors": error_table, "error-catalogue": error_catalogue_table,
          "schemas": schema_table, "input": input_table}
PARAMETRIC = {"example": example_block, "error-example": error_example_block}


def render(text: str) -> str:
    for name, make in BLOCKS.items():
        pattern = re.compile(rf"(<!-- BEGIN {name} -->).*?(<!-- END {name} -->)", re.DOTALL)
        text = pattern.sub(lambda m: f"{m.group(1)}\n{make()}\n{m.group(2)}", text)
    for kind, make_one in PARAMETRIC.items():
        pattern = re.compile(rf"(<!-- BEGIN {kind} ([\w.-]+) -->).*?(<!-- END {kind} \2 -->)", re.DOTALL)
        text = pattern.sub(lambda m: f"{m.group(1)}\n{make_one(m.group(2))}\n{m.group(3)}", text)
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
    stale += apispec.write_schemas() if args.write else apispec.stale_schemas()
    for path in stale:
        print(f"{'updated' if args.write else 'stale'}: {path.relative_to(ROOT)}")
    return 1 if stale and not args.write else 0


if __name__ == "__main__":
    sys.exit(main())
