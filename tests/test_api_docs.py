"""docs/api.md and docs/schema/: the schemas match the models, every JSON example validates against them, and
the recorded examples are what the worker answers today."""

from __future__ import annotations

import json
import re
import subprocess

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
        output = body["output"]
        kind = "dry-run-result" if output.get("dry_run") else "workflow-catalogue" if "workflows" in output \
            else "job-result"
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


def check_recorded(name: str, example: apiexamples.Example) -> None:
    """An example file: its body valid for its kind, and a note that says what recorded it."""
    check_example(request_kind(name) if name.endswith(".request") else "status-response", example.body)
    fault = apiexamples.FAULTED.get(name.rsplit(".", 1)[0])
    if fault is not None:
        assert example.recorded_with == fault.note(), f"{name}: recorded_with must name the injected fault"
    else:
        assert example.recorded_with.startswith(apiexamples.EMULATOR) or \
            re.fullmatch(r"ComfyUI [\w.]+( \(commit [0-9a-f]{12}\))?, CPU", example.recorded_with), name


def test_recorded_examples_validate():
    """Needs no ComfyUI: every example file, whatever recorded it, against the schemas of today's models."""
    examples = apiexamples.recorded()
    assert examples
    for name, example in examples.items():
        check_recorded(name, example)


def test_a_drifted_example_is_caught():
    examples = apiexamples.recorded()
    request = examples["completed.request"]
    with pytest.raises(jsonschema.ValidationError):
        check_recorded("completed.request", apiexamples.Example(
            {"input": {**request.body["input"], "imagez": []}}, request.recorded_with))
    response = examples["completed.response"]
    drifted = {**response.body, "output": {k: v for k, v in response.body["output"].items() if k != "outputs"}}
    with pytest.raises(jsonschema.ValidationError):
        check_recorded("completed.response", apiexamples.Example(drifted, response.recorded_with))
    with pytest.raises(AssertionError, match="injected fault"):
        check_recorded("failed-OUT_OF_MEMORY.response", apiexamples.Example(
            examples["failed-OUT_OF_MEMORY.response"].body, apiexamples.EMULATOR))


def test_the_note_is_not_part_of_the_body():
    """The client and the docs read the files: the note stays out of what they send and show."""
    path = apiexamples.EXAMPLES_DIR / "completed.request.json"
    raw = json.loads(path.read_text())
    assert set(raw) == {"recorded_with", "input"}
    with pytest.raises(jsonschema.ValidationError):
        validator("endpoint-request").validate(raw)
    assert reference.load_example("completed.request") == {"input": raw["input"]}
    assert "recorded_with" not in reference.example_block("completed.request").split("```")[1]


def test_what_records_each_example():
    """The faults run on the emulator; all else on the real ComfyUI when there is one. A stand-in recording
    (the emulator for want of a real ComfyUI) keeps a real one whose answer is the same."""
    real = apiexamples.Example({"id": "x"}, "ComfyUI 0.33.0 (commit 783545f689a0), CPU")
    stand_in = apiexamples.Example({"id": "x"}, apiexamples.EMULATOR, stand_in=True)
    assert apiexamples.matches(stand_in, real, "completed.response")
    assert not apiexamples.matches(apiexamples.Example({"id": "y"}, apiexamples.EMULATOR, stand_in=True), real,
                                   "completed.response")
    newer = apiexamples.Example({"id": "x"}, "ComfyUI 0.34.0 (commit 0123456789ab), CPU")
    assert not apiexamples.matches(newer, real, "completed.response")
    assert set(apiexamples.FAULTED) == {"failed-EXECUTION_ERROR", "failed-OUT_OF_MEMORY"}
    assert set(apiexamples.FAULTED) <= set(apiexamples.requests_())


def test_the_commit_of_a_comfyui_checkout(tmp_path):
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                              check=True, capture_output=True, text=True).stdout.strip()

    assert apiexamples.comfyui_commit(tmp_path) is None
    git("init", "-q")
    git("commit", "-q", "--allow-empty", "-m", "upstream")
    upstream = git("rev-parse", "HEAD")
    assert apiexamples.comfyui_commit(tmp_path) == upstream
    # scripts/rehearse-image.sh's stand-in commit runs the pinned commit it names
    git("commit", "-q", "--allow-empty", "-m", f"{upstream} without files the source lacks")
    assert apiexamples.comfyui_commit(tmp_path) == upstream


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


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_recorded_examples_are_what_the_worker_answers_now():
    """Runs the examples again: on the real ComfyUI where COMFYUI_DIR is set, else with the emulator
    standing in for it (it answers these cases as the real one does)."""
    fresh = apiexamples.generate()
    recorded = apiexamples.recorded()
    assert set(fresh) == set(recorded), "run: PYTHONPATH=src:. python -m tests.apiexamples --write"
    for name, example in fresh.items():
        assert apiexamples.matches(example, recorded[name], name), \
            f"{name} changed: run PYTHONPATH=src:. python -m tests.apiexamples --write (with COMFYUI_DIR)"
