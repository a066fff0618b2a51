"""Random job input never gets anything but a structured error: through the schema, the workflow resolver
and the whole pipeline against the emulator. Never another exception, never a hang, never a traceback as
the message.

Budget: FUZZ_EXAMPLES examples per property (default 200; the pipeline property runs a tenth of it, at
least 20). A longer run is one command away: FUZZ_EXAMPLES=5000 pytest tests/test_fuzz.py
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import functools
import json
import os
import re
import shutil
import struct
import tempfile
import zlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from comfy_worker.errors import ErrorCode, WorkerError
from comfy_worker.job import Job
from comfy_worker.schema import parse_job_input
from comfy_worker.workflow import resolve_workflow

from .workerkit import boot_runtime, empty_image_workflow, error_of, run
from comfy_worker_dev.emulator.catalogue import OBJECT_INFO_PATH

# Hypothesis caches constants and Unicode tables in its home folder: keep it out of the checkout.
_HOME = tempfile.mkdtemp(prefix="hypothesis-")
set_hypothesis_home_dir(_HOME)
atexit.register(shutil.rmtree, _HOME, ignore_errors=True)

FIXTURES = Path(__file__).parent / "fixtures" / "comfyui"
OBJECT_INFO: dict[str, Any] = json.loads(OBJECT_INFO_PATH.read_text())
CLASSES = sorted(OBJECT_INFO)
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "200"))
# The fixed CI budget explores the same examples every run (a red build is reproducible); a longer run
# (FUZZ_EXAMPLES set) draws new ones each time.
DERANDOMIZE = "FUZZ_EXAMPLES" not in os.environ
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=DERANDOMIZE,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
PIPELINE = settings(max_examples=max(20, EXAMPLES // 10), deadline=None, database=None, derandomize=DERANDOMIZE,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])
CODES = {code.value for code in ErrorCode}
TRACEBACK = re.compile(r"Traceback \(most recent call last\)|File \"[^\"]+\", line \d+")

# --- strategies -------------------------------------------------------------------------------------

# Every code point UTF-8 can carry (all but surrogates): the same set as st.text()'s default alphabet, which
# Hypothesis builds by encoding all 1.1 million code points once per process (seconds in each test worker).
UNICODE = st.characters(exclude_categories=("Cs",))


# Strategies are built once and drawn from many times: Hypothesis validates every new strategy object, which
# in a composite that builds them per draw costs more than the drawing.
@functools.cache
def text(max_size: int) -> st.SearchStrategy[str]:
    return st.text(UNICODE, max_size=max_size)


scalars = (st.none() | st.booleans() | st.integers(min_value=-(2 ** 256), max_value=2 ** 256)
           | st.floats(allow_nan=True, allow_infinity=True) | text(max_size=40)
           | st.sampled_from(["", "0", "-1", "1e400", "../../etc/passwd", "in.png", "a" * 300, "\x00", "🙂"]))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=5)
                           | st.dictionaries(text(max_size=12), inner, max_size=5), max_leaves=25)
node_ids = st.sampled_from(["1", "2", "3", "10", "0", "-1", "", "a", "1.5"]) | text(max_size=6)


link_outputs = st.integers(-2, 5) | json_values
class_types = st.sampled_from(CLASSES) | text(max_size=10) | json_values


@functools.cache
def links_to(ids: tuple[str, ...]) -> st.SearchStrategy[str]:
    return st.sampled_from(ids) | node_ids


@st.composite
def input_value(draw, ids: tuple[str, ...]) -> Any:
    if ids and draw(st.booleans()):
        return [draw(links_to(ids)), draw(link_outputs)]
    return draw(json_values)


@functools.cache
def node_inputs(names: tuple[str, ...], ids: tuple[str, ...]) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(st.sampled_from(names) | text(max_size=8), input_value(ids), max_size=6)


@st.composite
def api_graphs(draw) -> dict[str, Any]:
    ids = tuple(draw(st.lists(node_ids, min_size=1, max_size=6, unique=True)))
    graph: dict[str, Any] = {}
    for node_id in ids:
        class_type = draw(class_types)
        declared = OBJECT_INFO.get(class_type, {}).get("input", {}) if isinstance(class_type, str) else {}
        names = tuple(n for group in declared.values() if isinstance(group, dict) for n in group) or ("x",)
        inputs = draw(node_inputs(names, ids))
        node: dict[str, Any] = {"class_type": class_type, "inputs": inputs}
        if draw(st.integers(0, 9)) == 0:
            node = draw(json_values)
        if draw(st.integers(0, 9)) == 0 and isinstance(node, dict):
            node["_meta"] = {"title": draw(text(max_size=10))}
        graph[node_id] = node
    return graph


ui_node_ids = st.integers(-1, 6) | json_values
ui_node_types = st.sampled_from(CLASSES) | text(max_size=10)
ui_widgets = st.lists(json_values, max_size=6) | json_values
ui_inputs = st.lists(st.fixed_dictionaries(
    {"name": text(max_size=8), "link": st.integers(-1, 8) | st.none(), "type": text(max_size=6)}),
    max_size=3) | json_values
ui_modes = st.integers(0, 4) | json_values
ui_links = st.lists(st.lists(st.integers(-1, 8) | text(max_size=4), min_size=0, max_size=6), max_size=6) | json_values


@st.composite
def ui_workflows(draw) -> dict[str, Any]:
    nodes = []
    for index in range(draw(st.integers(0, 5))):
        node: dict[str, Any] = {"id": draw(ui_node_ids), "type": draw(ui_node_types),
                                "widgets_values": draw(ui_widgets)}
        if draw(st.booleans()):
            node["inputs"] = draw(ui_inputs)
        if draw(st.booleans()):
            node["mode"] = draw(ui_modes)
        nodes.append(node)
    links = draw(ui_links)
    workflow = {"nodes": nodes, "links": links}
    if draw(st.booleans()):
        workflow["groups"] = draw(json_values)
    if draw(st.booleans()):
        workflow["extra"] = draw(json_values)
    return workflow


# Malformed UI workflows are left to the resolver properties until the converter checks field types.
workflows = api_graphs() | json_values
inputs_maps = st.none() | st.dictionaries(
    st.sampled_from(["1.width", "1.color", "2.image", "3.filename_prefix", "seed", "x.y", "1.", ".x"])
    | text(max_size=12), json_values, max_size=4) | json_values


job_images = st.lists(st.fixed_dictionaries(
    {"name": st.sampled_from(["in.png", "../x.png", "", "a/b.png"]) | text(max_size=12),
     "image": st.sampled_from(["", "!!!", "aGVsbG8=", "data:image/png;base64,AAAA"]) | text(max_size=30)}),
    max_size=3) | json_values
execution_configs = st.fixed_dictionaries({}, optional={
    "randomize_seeds": json_values, "output_nodes": json_values, "dry_run": st.booleans() | json_values}) | json_values
output_configs = st.fixed_dictionaries({}, optional={"include_temp": json_values, "storage": json_values}) | json_values


@st.composite
def job_inputs(draw) -> Any:
    if draw(st.integers(0, 5)) == 0:
        return draw(json_values)
    job: dict[str, Any] = {}
    if draw(st.integers(0, 9)):
        job["workflow"] = draw(workflows)
    if draw(st.booleans()):
        job["images"] = draw(job_images)
    if draw(st.booleans()):
        job["inputs"] = draw(inputs_maps)
    if draw(st.booleans()):
        job["execution_config"] = draw(execution_configs)
    if draw(st.booleans()):
        job["output_config"] = draw(output_configs)
    if draw(st.integers(0, 9)) == 0:
        job[draw(text(max_size=8))] = draw(json_values)
    return job


@st.composite
def mutated_runnable_jobs(draw) -> dict[str, Any]:
    """A workflow that runs, with one value or link broken: most of these reach the emulator."""
    workflow = empty_image_workflow(width=draw(st.integers(1, 64)), height=draw(st.integers(1, 64)))
    workflow["3"] = {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}}
    workflow["2"]["inputs"]["images"] = ["3", 0]
    if draw(st.booleans()):
        node = draw(st.sampled_from(sorted(workflow)))
        name = draw(st.sampled_from(sorted(workflow[node]["inputs"])) | text(max_size=6))
        workflow[node]["inputs"][name] = draw(input_value(tuple(sorted(workflow))))
    job: dict[str, Any] = {"workflow": workflow}
    if draw(st.booleans()):
        job["inputs"] = draw(inputs_maps)
    if draw(st.booleans()):
        job["execution_config"] = {"randomize_seeds": draw(st.booleans()), "dry_run": draw(st.booleans())}
    return job


def assert_structured(err: WorkerError) -> None:
    assert isinstance(err, WorkerError)
    assert err.code.value in CODES
    assert isinstance(err.message, str) and err.message.strip()
    assert not TRACEBACK.search(err.message), err.message
    assert len(err.message) < 4000, f"message of {len(err.message)} characters"
    payload = json.loads(err.to_error_string("job"))
    assert payload["code"] == err.code.value and payload["message"] == err.message


# --- schema and resolver ----------------------------------------------------------------------------


@pytest.mark.slow
@FUZZ
@given(raw=job_inputs())
def test_parse_job_input_accepts_or_names_the_problem(raw):
    try:
        parsed = parse_job_input(raw)
    except WorkerError as err:
        assert_structured(err)
        assert err.code == ErrorCode.INVALID_INPUT
        assert err.details["errors"] and all("field" in e and "problem" in e for e in err.details["errors"])
        return
    assert isinstance(parsed.workflow, dict) and parsed.workflow


def resolve_like_the_pipeline(workflow: Any, inputs: Any = None, randomize: bool = False) -> None:
    """What Job._resolve does with a parsed request (the catalogue and model lists come from fixtures)."""
    resolve_workflow(workflow, OBJECT_INFO, inputs=inputs, randomize=randomize,
                     models={"checkpoints": ["tiny-sd15.safetensors"]}, input_files=["in.png"], staged_files=[])


def resolve_or_structured_error(workflow: Any, inputs: Any, randomize: bool) -> None:
    try:
        request = parse_job_input({"workflow": workflow, **({"inputs": inputs} if inputs is not None else {})})
    except WorkerError as err:
        assert_structured(err)
        return
    try:
        resolve_like_the_pipeline(request.workflow, request.inputs if isinstance(request.inputs, dict) else None,
                                  randomize)
    except WorkerError as err:
        assert_structured(err)


@pytest.mark.slow
@FUZZ
@given(workflow=api_graphs(), inputs=st.none() | inputs_maps, randomize=st.booleans())
def test_resolver_resolves_api_graphs_or_raises_a_catalogued_error(workflow, inputs, randomize):
    resolve_or_structured_error(workflow, inputs, randomize)




# Hypothesis reports several distinct failures as one ExceptionGroup, hence no `raises=` here.
@pytest.mark.slow
@settings(FUZZ, phases=[Phase.explicit, Phase.generate])  # no shrinking while it is expected to fail
@given(workflow=ui_workflows(), inputs=st.none() | inputs_maps, randomize=st.booleans())
def test_resolver_converts_ui_workflows_or_raises_a_catalogued_error(workflow, inputs, randomize):
    resolve_or_structured_error(workflow, inputs, randomize)


@pytest.mark.parametrize("workflow", [
    {"nodes": [{"id": 1, "type": "EmptyImage", "inputs": True}], "links": []},
    {"nodes": [{"id": 2, "type": "ImageInvert", "inputs": ["image"]}], "links": []},
    {"nodes": [], "links": [], "extra": True},
    {"nodes": [], "links": [], "definitions": True},
    {"nodes": [], "links": 1},
], ids=["inputs-not-a-list", "input-item-not-an-object", "extra-not-an-object", "definitions-not-an-object",
        "links-not-a-list"])
def test_malformed_ui_workflow_fields_are_invalid_workflow(workflow):
    with pytest.raises(WorkerError) as caught:
        resolve_like_the_pipeline(workflow)
    assert caught.value.code == ErrorCode.INVALID_WORKFLOW


# --- the whole pipeline against the emulator ------------------------------------------------------


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    runtime, settings = boot_runtime(tmp_path_factory.mktemp("fuzz"))
    yield runtime, settings
    runtime.shutdown()


def run_bounded(runtime, settings, job_input: Any, job_id: str = "fuzz") -> dict[str, Any]:
    async def bounded():
        return await asyncio.wait_for(Job({"id": job_id, "input": job_input}, runtime, settings,
                                          lambda p: None).run(), timeout=20)

    try:
        return asyncio.run(bounded())
    except asyncio.TimeoutError:
        pytest.fail(f"the job hung: {json.dumps(job_input, default=str)[:500]}")


@pytest.mark.slow
@PIPELINE
@given(job_input=job_inputs() | mutated_runnable_jobs())
def test_pipeline_answers_every_input_with_a_result_or_a_structured_error(worker, job_input):
    runtime, settings = worker
    result = run_bounded(runtime, settings, job_input)
    if "error" in result:
        payload = json.loads(result["error"])
        assert payload["code"] in CODES
        assert isinstance(payload["message"], str) and payload["message"].strip()
        assert not TRACEBACK.search(payload["message"]), payload["message"]
        assert payload["code"] != "INTERNAL_ERROR", payload
    else:
        assert "outputs" in result or result.get("dry_run") is True, result


def test_unexpected_exception_in_the_pipeline_becomes_a_structured_error(worker):
    runtime, settings = worker
    workflow = {"nodes": [{"id": 1, "type": "EmptyImage", "inputs": True}], "links": []}
    err = error_of(run_bounded(runtime, settings, {"workflow": workflow}))
    assert err["code"] in {"INVALID_WORKFLOW", "INTERNAL_ERROR"}
    assert not TRACEBACK.search(err["message"])


# --- limits: deep, huge, bombs -----------------------------------------------------------------------


def deep_list(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value




def test_deeply_nested_node_input_is_refused_with_a_structured_error(worker):
    runtime, settings = worker
    workflow = empty_image_workflow()
    workflow["1"]["inputs"]["extra"] = deep_list(100_000)
    err = error_of(run_bounded(runtime, settings, {"workflow": workflow}))
    assert err["code"] in {"INVALID_INPUT", "INVALID_WORKFLOW"}, err


def test_deeply_nested_inputs_map_is_refused_with_a_structured_error(worker):
    runtime, settings = worker
    err = error_of(run_bounded(runtime, settings, {"workflow": empty_image_workflow(),
                                                   "inputs": {"1.color": deep_list(100_000)}}))
    assert err["code"] in {"INVALID_INPUT", "INVALID_WORKFLOW"}, err


def test_huge_workflow_is_refused_up_front(worker):
    runtime, settings = worker
    workflow = {str(i): {"class_type": "PrimitiveInt", "inputs": {"value": i}} for i in range(100_000)}
    workflow.update(empty_image_workflow())
    err = error_of(run_bounded(runtime, settings, {"workflow": workflow}))
    assert err["code"] in {"INVALID_INPUT", "POLICY_VIOLATION"}
    assert "size" in err["message"] or "nodes" in err["message"]


def _zeros_zlib(length: int) -> bytes:
    """A valid zlib stream of `length` zero bytes, built without compressing them all.

    After a full flush deflate starts afresh, so every block of the same zeros compresses to the same bytes
    and can be repeated; the Adler-32 of n zeros is (n mod 65521) << 16 | 1."""
    step = 1 << 22
    if length < step:
        return zlib.compress(bytes(length), 9)
    squeezer = zlib.compressobj(9)
    first = squeezer.compress(bytes(step)) + squeezer.flush(zlib.Z_FULL_FLUSH)
    block = squeezer.compress(bytes(step)) + squeezer.flush(zlib.Z_FULL_FLUSH)
    count, rest = divmod(length, step)
    last = squeezer.compress(bytes(rest)) + squeezer.flush()
    return first + block * (count - 1) + last[:-4] + struct.pack(">I", (length % 65521) << 16 | 1)


def _png_of_size(width: int, height: int) -> bytes:
    """A valid grey PNG of width x height whose zlib stream of zero rows compresses to almost nothing."""
    raw = _zeros_zlib((width + 1) * height)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", raw) + chunk(b"IEND", b""))


def test_decompression_bomb_input_image_is_refused_before_upload(tmp_path):
    runtime, settings = boot_runtime(tmp_path, MAX_PIXELS=str(4096 * 4096))
    try:
        bomb = _png_of_size(40_000, 40_000)
        assert len(bomb) < 3_000_000
        workflow = {"1": {"class_type": "LoadImage", "inputs": {"image": "bomb.png"}},
                    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "b"}}}
        err = error_of(run(runtime, settings, {"workflow": workflow,
                                               "images": [{"name": "bomb.png",
                                                           "image": base64.b64encode(bomb).decode()}]}))
        assert err["code"] in {"INVALID_INPUT", "POLICY_VIOLATION"}, err
        assert "pixel" in err["message"].lower()
        assert not any(p.is_file() for p in settings.input_dir.rglob("*")), "the bomb reached ComfyUI"
    finally:
        runtime.shutdown()


def test_huge_generated_image_is_refused_by_pixel_count(tmp_path):
    runtime, settings = boot_runtime(tmp_path, MAX_PIXELS=str(4096 * 4096))
    try:
        err = error_of(run(runtime, settings, {"workflow": empty_image_workflow(width=16384, height=16384)}))
        assert err["code"] == "POLICY_VIOLATION", err
        assert "pixel" in err["message"].lower()
    finally:
        runtime.shutdown()
