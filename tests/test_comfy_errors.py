"""ComfyUI's own error bodies (captured from a real server) become structured, named worker errors."""

import pytest

from comfy_worker.errors import ErrorCode
from comfy_worker.comfy.failures import history_error, rejected_error

from .captures import capture


def request_prompt(name):
    return capture(f"{name}_request.json")["prompt"]


def test_unknown_node_type_names_node_and_class():
    wf = request_prompt("err_unknown_class_type")
    err = rejected_error(capture("err_unknown_class_type_response.json"), wf)
    assert err.code is ErrorCode.INVALID_WORKFLOW
    assert err.details["problems"][0]["node_id"] == "2"
    assert err.details["problems"][0]["class_type"] == "NoSuchNodeClass"
    assert "node 2 (NoSuchNodeClass)" in err.message


@pytest.mark.parametrize("name, node_id, class_type, input_name", [
    ("err_value_not_in_list_combo", "2", "ImageScale", "upscale_method"),
    ("err_value_above_max_width100000", "1", "EmptyImage", "width"),
    ("err_missing_required_input", None, None, None),
    ("err_return_type_mismatch", None, None, None),
])
def test_node_errors_are_listed_per_node(name, node_id, class_type, input_name):
    wf = request_prompt(name)
    body = capture(f"{name}_response.json")
    err = rejected_error(body, wf)
    assert err.code is ErrorCode.INVALID_WORKFLOW
    assert err.details["node_errors"] == body["node_errors"]
    problems = err.details["problems"]
    assert len(problems) == sum(len(v["errors"]) for v in body["node_errors"].values())
    for p in problems:
        assert p["class_type"] == wf[p["node_id"]]["class_type"]
        assert f"node {p['node_id']} ({p['class_type']})" in err.message
    if node_id:
        assert any(p["node_id"] == node_id and p["class_type"] == class_type and p["input_name"] == input_name
                   for p in problems)


def test_execution_error_names_node_class_exception():
    entry = next(iter(capture("exec_error_corrupt_loadimage_history.json").values()))
    wf = entry["prompt"][2]
    err = history_error(entry, wf)
    assert err.code is ErrorCode.EXECUTION_ERROR
    assert err.details["node_id"] == "1"
    assert err.details["class_type"] == "LoadImage"
    assert err.details["exception_type"] == "OSError"
    assert "Truncated File Read" in err.details["exception_message"]
    assert "node 1 (LoadImage)" in err.message and "Truncated File Read" in err.message


def test_oom_becomes_out_of_memory():
    entry = {"status": {"status_str": "error", "completed": False, "messages": [
        ["execution_error", {"node_id": "3", "node_type": "KSampler", "exception_type": "torch.OutOfMemoryError",
                             "exception_message": "Allocation on device \nThis error means you ran out of memory "
                                                  "on your GPU.", "traceback": [], "executed": []}]]}}
    err = history_error(entry, {"3": {"class_type": "KSampler"}})
    assert err.code is ErrorCode.OUT_OF_MEMORY and err.retryable


def test_success_is_not_an_error():
    entry = next(iter(capture("flow_emptyimage_save_history.json").values()))
    assert history_error(entry, entry["prompt"][2]) is None


def test_interrupted_prompt():
    entry = next(iter(capture("interrupt_slow_chain_history.json").values()))
    err = history_error(entry, entry["prompt"][2])
    assert err.code is ErrorCode.CANCELLED
