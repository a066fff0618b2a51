"""docs/api.md and docs/schema/: the schemas match the models, every JSON example validates against them, and
the recorded examples are what the worker answers today."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest

from comfy_worker_dev import apispec, reference
from comfy_worker.errors import ErrorCode
from tests import apiexamples

API_MD = reference.ROOT / "docs" / "api.md"
_FENCE = re.compile(r"^```json[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)
_KIND = re.compile(r"<!-- (?:BEGIN (example|error-example) ([\w.-]+)|(request|status-response|stream-chunk|event))"
                   r" -->\s*$")


def validator(name: str) -> jsonschema.protocols.Validator:
    schema = json.loads(apispec.schema_path(name).read_text())
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema)


def check_status_response(body: dict) -> None:
    """A status response, with its `output` or parsed `error` checked against the schema of its status."""
    validator("status-response").validate(body)
    status = body["status"]
    if status == "COMPLETED" and isinstance(body["output"], list):  # stream mode: every chunk, the result last
        for chunk in body["output"]:
            validator("stream-chunk").validate(chunk)
        assert "event" not in body["output"][-1]
    elif status == "COMPLETED":
        kind = "dry-run-result" if body["output"].get("dry_run") else "job-result"
        validator(kind).validate(body["output"])
    elif status == "IN_PROGRESS" and "output" in body:
        validator("progress").validate(body["output"])
    elif status == "FAILED":
        validator("error-payload").validate(json.loads(body["error"]))
    else:
        assert "output" not in body and "error" not in body


def request_kind(name: str) -> str:
    # The INVALID_INPUT example shows a request the schema refuses: it must stay invalid.
    return "invalid-request" if name.startswith("failed-INVALID_INPUT") else "request"


def check_example(kind: str, value: object) -> None:
    if kind == "invalid-request":
        with pytest.raises(jsonschema.ValidationError):
            validator("endpoint-request").validate(value)
    elif kind == "request":
        validator("endpoint-request").validate(value)
    elif kind == "status-response":
        check_status_response(value)
    elif kind == "error-payload":
        validator("error-payload").validate(value)
    elif kind in {"stream-chunk", "event"}:
        validator(kind).validate(value)
    else:
        raise AssertionError(kind)


def kind_of_block(name: str | None, marker: str | None, block: str | None) -> str:
    if marker:
        return marker
    if block == "error-example":
        return "error-payload"
    assert name is not None
    return request_kind(name) if name.endswith(".request") else "status-response"


def json_blocks(text: str) -> list[tuple[int, str, object]]:
    """(line, kind, value) of every JSON block; the kind comes from the marker line just above it."""
    found = []
    for match in _FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        above = text[:match.start()].rstrip("\n").rsplit("\n", 2)
        marker = next((_KIND.search(candidate) for candidate in reversed(above) if _KIND.search(candidate)), None)
        assert marker, f"api.md:{line}: a JSON block without a <!-- request --> or <!-- status-response --> marker"
        block, name, plain = marker.groups()
        found.append((line, kind_of_block(name, plain, block), json.loads(match.group(1))))
    return found


def test_schema_files_match_the_models():
    assert not apispec.stale_schemas(), "docs/schema is stale: run python -m comfy_worker_dev.reference --write"


def test_a_changed_model_makes_the_schema_stale(monkeypatch, tmp_path):
    monkeypatch.setattr(apispec, "SCHEMA_DIR", tmp_path)
    apispec.write_schemas()
    assert not apispec.stale_schemas()
    path = apispec.schema_path("job-input")
    path.write_text(path.read_text().replace('"workflow"', '"workflow_renamed"', 1))
    assert apispec.stale_schemas() == [path]


def test_every_json_example_in_the_api_docs_validates():
    blocks = json_blocks(API_MD.read_text())
    kinds = {kind for _, kind, _ in blocks}
    assert {"request", "status-response", "error-payload"} <= kinds
    for line, kind, value in blocks:
        try:
            check_example(kind, value)
        except jsonschema.ValidationError as exc:
            pytest.fail(f"api.md:{line} ({kind}): {exc.message}")


def test_recorded_examples_validate():
    for path in sorted(apiexamples.EXAMPLES_DIR.glob("*.json")):
        value = json.loads(path.read_text())
        name = path.name.removesuffix(".json")
        check_example(request_kind(name) if name.endswith(".request") else "status-response", value)


def test_an_invalid_example_is_caught():
    with pytest.raises(jsonschema.ValidationError):
        check_example("request", {"input": {"workflow": {"1": {}}, "imagez": []}})
    with pytest.raises(jsonschema.ValidationError):
        check_example("status-response", {"id": "x", "status": "FAILED", "error": json.dumps({"code": "OOPS"})})
    with pytest.raises(jsonschema.ValidationError):
        check_example("status-response", {"id": "x", "status": "COMPLETED", "output": {"outputs": []}})
    with pytest.raises(AssertionError, match="marker"):
        json_blocks("text\n\n```json\n{}\n```\n")


def test_every_error_code_has_an_example_in_the_catalogue():
    table = reference.error_catalogue_table()
    for code in ErrorCode:
        message, _ = reference.error_example(code)
        assert message and f"`{code.value}`" in table


@pytest.mark.timeout(300)
def test_recorded_examples_are_what_the_worker_answers_now():
    fresh = apiexamples.generate()
    recorded = {p.name.removesuffix(".json"): json.loads(p.read_text())
                for p in apiexamples.EXAMPLES_DIR.glob("*.json")}
    assert set(fresh) == set(recorded), "run: PYTHONPATH=src python -m tests.apiexamples --write"
    for name, value in fresh.items():
        if name == "in-progress.response":
            # Which progress report falls mid-run depends on timing; its shape must not change.
            assert value["output"].keys() == recorded[name]["output"].keys()
            continue
        if name == "stream.response":
            # How many progress and preview chunks a run yields depends on timing; their kinds, the output
            # and the result must not change.
            kinds = [{c.get("event", "result") for c in v["output"]} for v in (value, recorded[name])]
            assert kinds[0] == kinds[1], kinds
            assert value["output"][-1] == recorded[name]["output"][-1]
            continue
        assert value == recorded[name], f"{name} changed: run PYTHONPATH=src python -m tests.apiexamples --write"
