import json

import pytest

from comfy_worker.errors import ErrorCode, WorkerError
from comfy_worker.schema import parse_job_input

WF = {"1": {"class_type": "EmptyImage", "inputs": {}}}


def fields(err: WorkerError) -> dict[str, str]:
    return {e["field"]: e["problem"] for e in err.details["errors"]}


def test_minimal_input_is_accepted():
    parsed = parse_job_input({"workflow": WF})
    assert parsed.workflow == WF
    assert parsed.images == []


def test_worker_comfyui_shape_is_accepted():
    parsed = parse_job_input({"workflow": WF, "images": [{"name": "a.png", "image": "aGVsbG8="}]})
    assert parsed.images[0].name == "a.png"


@pytest.mark.parametrize("raw, field, fragment", [
    ({}, "workflow", "required"),
    ({"workflow": WF, "extra": 1}, "extra", "unknown field"),
    ({"workflow": {}}, "workflow", "at least one node"),
    ({"workflow": "not a dict"}, "workflow", "not json"),
    ({"workflow": "[1, 2]"}, "workflow", "dictionary"),
    ({"workflow": WF, "images": [{"name": "../x.png", "image": "aGk="}]}, "images[0].name", "plain file name"),
    ({"workflow": WF, "images": [{"name": "x.png"}]}, "images[0].image", "required"),
    ({"workflow": WF, "images": [{"name": "x.png", "image": "aGk=", "type": "png"}]}, "images[0].type",
     "unknown field"),
])
def test_every_problem_names_its_field(raw, field, fragment):
    with pytest.raises(WorkerError) as info:
        parse_job_input(raw)
    err = info.value
    assert err.code is ErrorCode.INVALID_INPUT
    assert field in fields(err), fields(err)
    assert fragment in fields(err)[field].lower()
    assert field in err.message


def test_non_object_input():
    with pytest.raises(WorkerError) as info:
        parse_job_input(["workflow"])
    assert info.value.details["errors"][0]["field"] == "input"


def test_several_problems_reported_together():
    with pytest.raises(WorkerError) as info:
        parse_job_input({"images": [{"name": "/etc/passwd", "image": ""}], "bogus": True})
    assert {"workflow", "images[0].name", "images[0].image", "bogus"} <= set(fields(info.value))


def test_error_string_is_json_with_code():
    err = WorkerError(ErrorCode.INVALID_INPUT, "bad", {"errors": []})
    payload = json.loads(err.to_error_string("job-1"))
    assert payload == {"code": "INVALID_INPUT", "message": "bad", "retryable": False,
                       "details": {"errors": []}, "job_id": "job-1"}


def test_deep_nesting_refused_without_recursion():
    deep: list = []
    cursor = deep
    for _ in range(100_000):
        cursor.append([])
        cursor = cursor[0]
    with pytest.raises(WorkerError) as info:
        parse_job_input({"workflow": {"1": {"class_type": "X", "inputs": {"v": deep}}}})
    assert info.value.code is ErrorCode.INVALID_INPUT and "deeper" in info.value.message


def test_too_many_nodes_refused_up_front():
    wf = {str(i): {"class_type": "PrimitiveInt", "inputs": {"value": i}} for i in range(6000)}
    with pytest.raises(WorkerError) as info:
        parse_job_input({"workflow": wf})
    assert info.value.details["errors"] == [{"field": "workflow", "problem": "6000 nodes, limit 5000"}]


@pytest.mark.parametrize("raw, field, suggestion", [
    ({"workflow": WF, "ouput_config": {}}, "ouput_config", "output_config"),
    ({"workflow": WF, "image": []}, "image", "images"),
    ({"workflow": WF, "output_config": {"fromat": "png"}}, "output_config.fromat", "output_config.format"),
    ({"workflow": WF, "images": [{"name": "a.png", "image": "aGk=", "nme": "b"}]}, "images[0].nme", "images[0].name"),
    ({"workflow": WF, "execution_config": {"dryrun": True}}, "execution_config.dryrun", "execution_config.dry_run"),
])
def test_unknown_field_suggests_the_known_one(raw, field, suggestion):
    with pytest.raises(WorkerError) as info:
        parse_job_input(raw)
    [entry] = [e for e in info.value.details["errors"] if e["field"] == field]
    assert entry["suggestion"] == suggestion and repr(suggestion.rsplit(".", 1)[-1].split("]")[-1]) in entry["problem"]


def test_unknown_field_far_from_any_has_no_suggestion():
    with pytest.raises(WorkerError) as info:
        parse_job_input({"workflow": WF, "seed": 5})
    assert info.value.details["errors"] == [{"field": "seed", "problem": "unknown field"}]


def test_workflow_as_json_string_is_parsed_with_a_warning():
    warnings: list[str] = []
    assert parse_job_input({"workflow": json.dumps(WF)}, warnings=warnings).workflow == WF
    assert warnings == ["workflow was sent as a string of JSON; it was parsed (send an object)"]
