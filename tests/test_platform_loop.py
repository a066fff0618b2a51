"""The worker as RunPod runs it: `python -u handler.py` with the RUNPOD_WEBHOOK_* variables, its SDK loop
talking to an emulator of RunPod's worker-facing job API (tests/platform), the worker managing its own
ComfyUI (the emulator; a real ComfyUI too when COMFYUI_DIR is set)."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from comfy_run import outputs_with_data
from comfy_worker_dev import mermaid
from comfy_worker_dev.localserver import LocalWorkerServer
from tests.platform.harness import REPO_ROOT
from comfy_worker_dev.emulator import FAULTS_ENV
from comfy_worker_dev.emulator.server import DEVICE_ENV
from tests.platform import (SDK_VERSION, Call, RunPodPlatform, WorkerProcess, fake_nvidia_smi, recording_torch,
                            to_mermaid)

from .eventreceiver import SECRET, event_receiver
from .workerkit import empty_image_workflow, invert_workflow, png_b64, real_comfyui, worker_env

TARGETS = ["emulator"] + (["real"] if real_comfyui() else [])
FORM = "application/x-www-form-urlencoded"
# A job of a few seconds on the emulator: every node sleeps this long.
SLOW_NODE = 0.8


def _long_workflow(color: int) -> dict[str, Any]:
    """Four nodes: two seconds on the emulator at 0.5 s a node."""
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": color}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "ImageInvert", "inputs": {"image": ["2", 0]}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "long"}},
    }


@dataclass(frozen=True)
class Special:
    """A worker configured differently from the module's."""

    env: dict[str, str] = field(default_factory=dict)
    sdk_checks_off_in_env: bool = True
    queued: tuple[str, ...] = ()  # ids of jobs queued before the worker starts


# Where nvidia-smi answers, the SDK's checks run the GPU check and import torch for CUDA checks; with too
# little memory by its threshold, its memory check ends the worker.
_GPU_HOST_SHORT_OF_MEMORY = {"RUNPOD_MIN_MEMORY_GB": "100000"}

SPECIALS = {
    "pair": Special({"MAX_CONCURRENCY": "2"}),
    "refresh": Special({"REFRESH_WORKER_AFTER_JOBS": "2"}),
    "no_comfyui": Special({FAULTS_ENV: json.dumps({"exit_at_start": 3}), "START_TIMEOUT": "20"},
                          queued=("queued-before-start",)),
    # A GPU host (nvidia-smi answers) whose ComfyUI reports its GPU, started without the SDK switches: the
    # SDK's checks would import torch (here one that records its import) and fail on memory.
    "sdk_checks": Special({**_GPU_HOST_SHORT_OF_MEMORY, DEVICE_ENV: "cuda"}, sdk_checks_off_in_env=False),
    # A GPU host whose ComfyUI runs on the CPU (a torch that cannot see the GPU falls back silently).
    "cpu_on_gpu_host": Special({}, queued=("queued-before-unfit-start",)),
    # Stream mode, with signed events to a caller's URL on loopback.
    "stream": Special({"STREAM_MODE": "true", "EVENTS_SECRET": SECRET, "ALLOW_PRIVATE_URLS": "true",
                       "ALLOW_HTTP_URLS": "true"}),
}
GPU_HOSTS = {"sdk_checks", "cpu_on_gpu_host"}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[RunPodPlatform, WorkerProcess]]]:
    """The special workers (SPECIALS), each with a platform of its own, all started at once: their start-ups
    overlap instead of adding up."""
    root = tmp_path_factory.mktemp("platform-fleet")
    with contextlib.ExitStack() as stack:
        started: dict[str, tuple[RunPodPlatform, WorkerProcess]] = {}
        for name, spec in SPECIALS.items():
            api = stack.enter_context(RunPodPlatform())
            for job_id in spec.queued:
                api.enqueue({"workflow": empty_image_workflow()}, job_id)
            env = dict(spec.env)
            if name in GPU_HOSTS:
                env["PATH"] = f"{fake_nvidia_smi(root / 'bin')}:{os.environ['PATH']}"
                env["PYTHONPATH"] = str(recording_torch(root / "fake-site"))
                env["TORCH_IMPORT_LOG"] = str(root / f"torch-imports-{name}.log")
            proc = WorkerProcess(api, root / name, env=env, sdk_checks_off_in_env=spec.sdk_checks_off_in_env,
                                 pod_id=f"worker-{name}")
            # The emulator's CheckpointLoaderSimple needs only a name in its checkpoints folder.
            checkpoint = Path(proc.env["COMFYUI_DIR"]) / "models" / "checkpoints" / "tiny-sd15.safetensors"
            checkpoint.write_bytes(b"emulated")
            started[name] = (api, stack.enter_context(proc))
        yield started
        for _, proc in started.values():
            proc.terminate()  # all at once; the stack then waits for each


@pytest.fixture(scope="module", params=TARGETS)
def target(request: pytest.FixtureRequest) -> str:
    if request.param == "real":
        request.applymarker(pytest.mark.real_comfyui)
    return str(request.param)


@pytest.fixture(scope="module")
def platform(target: str) -> Iterator[RunPodPlatform]:
    with RunPodPlatform() as api:
        yield api


@pytest.fixture(scope="module")
def worker(platform: RunPodPlatform, target: str, fleet: dict[str, Any],
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    """One worker for the module, as in the image (started after the fleet, so that they boot together)."""
    with WorkerProcess(platform, tmp_path_factory.mktemp("platform-worker"), real=target == "real") as proc:
        proc.wait_polling(300 if target == "real" else 60)
        yield proc
    assert platform.violations() == []


@pytest.fixture(scope="module")
def local(target: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalWorkerServer, Path]]:
    """The same worker under the SDK's local API server, to compare results with; and its folder."""
    tmp = tmp_path_factory.mktemp("platform-local")
    with open(tmp / "worker.log", "wb") as log_file, \
            LocalWorkerServer(worker_env(tmp, real=target == "real"), log_file=log_file) as server:
        yield server, tmp


@pytest.fixture
def emulated(worker: WorkerProcess, target: str) -> WorkerProcess:
    """The module's worker, for tests that need the emulator's fault knobs (slow nodes)."""
    if target != "emulator":
        pytest.skip("needs the ComfyUI emulator's slow nodes")
    return worker


@contextlib.contextmanager
def slow_nodes(proc: WorkerProcess, seconds: float = SLOW_NODE) -> Iterator[None]:
    proc.set_emulator_faults(node_delay=seconds)
    try:
        yield
    finally:
        proc.set_emulator_faults(node_delay=0.0)


def decode(entry: dict[str, Any]) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(entry["data"]))).convert("RGB")


def error_of(body: dict[str, Any]) -> dict[str, Any]:
    assert set(body) == {"error"}, body
    assert isinstance(body["error"], str)  # a string holding JSON, as the SDK passes it on
    return json.loads(body["error"])


# ---------------------------------------------------------------------- the emulator itself


def _get(url: str, timeout: float = 5) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers={"Authorization": "rp-test-key"}),
                                    timeout=timeout) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        return exc.code, None


def test_emulator_speaks_the_routes_the_sdk_uses():
    with RunPodPlatform(long_poll=0.2) as api:
        env = api.webhook_env()
        take = env["RUNPOD_WEBHOOK_GET_JOB"].replace("$ID", "w1")
        assert take == f"{api.url}/v2/comfy-worker-test/job-take/w1?gpu=NVIDIA"
        started = time.monotonic()
        assert _get(take + "&job_in_progress=0") == (204, None)
        assert time.monotonic() - started >= 0.2  # held as a long poll
        a, b, c = api.enqueue_many([{"n": 1}, {"n": 2}, {"n": 3}], ["a", "b", "c"])
        assert _get(take + "&job_in_progress=0") == (200, {"id": "a", "input": {"n": 1}})
        batch = take.replace("/job-take/", "/job-take-batch/")
        assert _get(batch + "&batch_size=5&job_in_progress=1") == (200, [{"id": "b", "input": {"n": 2}},
                                                                         {"id": "c", "input": {"n": 3}}])
        assert [api.job_status(j) for j in (a, b, c)] == ["IN_PROGRESS"] * 3
        stop = take.replace("/job-take/", "/job-stop/")
        assert _get(stop) == (204, None)
        api.stop_job("b")
        assert _get(stop) == (200, {"jobsToStop": ["b"]})
        assert api.job_status("b") == "CANCELLED"
        ping = env["RUNPOD_WEBHOOK_PING"].replace("$RUNPOD_POD_ID", "w1")
        assert _get(ping + f"&job_id=a,c&runpod_version={SDK_VERSION}") == (200, None)
        assert api.calls("ping")[-1].ping_job_ids == ["a", "c"]
        assert [c.route for c in api.calls()] == ["job-take", "job-take", "job-take-batch", "job-stop",
                                                  "job-stop", "ping"]
        assert api.violations() == []


def test_emulator_refuses_what_the_sdk_never_sends():
    with RunPodPlatform(long_poll=0.1) as api:
        take = api.webhook_env()["RUNPOD_WEBHOOK_GET_JOB"].replace("$ID", "w1")
        assert _get(take)[0] == 400                                     # no job_in_progress
        assert _get(take.replace("?gpu=NVIDIA", "&job_in_progress=0"))[0] == 404  # template without '?'
        assert _get(take.replace("/job-take/", "/job-take-batch/") + "&batch_size=1&job_in_progress=0")[0] == 400
        req = urllib.request.Request(take + "&job_in_progress=0")     # no Authorization
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=5)
        assert err.value.code == 401
        assert len(api.violations()) == 4, api.violations()
        assert [c.status for c in api.calls()] == [400, 404, 400, 401]


def test_emulator_knobs_and_cancel_of_a_queued_job():
    with RunPodPlatform(long_poll=0.1) as api:
        take = api.webhook_env()["RUNPOD_WEBHOOK_GET_JOB"].replace("$ID", "w1") + "&job_in_progress=0"
        queued = api.enqueue({"x": 1})
        api.answer_next_takes(429)
        api.answer_next_takes(400)
        assert [_get(take)[0] for _ in range(2)] == [429, 400]
        api.stop_job(queued)  # cancelled while queued: never handed out
        assert _get(take) == (204, None)
        assert api.job_status(queued) == "CANCELLED" and api.queued() == []


def test_sdk_fitness_failure_report_reaches_the_ping_route(monkeypatch: pytest.MonkeyPatch):
    """What a failing start-up check sends: the SDK's own rp_fitness._report_unhealthy."""
    from runpod.serverless.modules import rp_fitness, worker_state

    with RunPodPlatform() as api:
        for name, value in {**api.webhook_env(), "RUNPOD_AI_API_KEY": "rp-test-key"}.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setattr(worker_state, "WORKER_ID", "w9")  # read from RUNPOD_POD_ID when the SDK is imported
        rp_fitness._report_unhealthy("_disk_check", "RuntimeError: disk full")
        [report] = api.calls("ping")
        assert report.is_unhealthy_report and report.worker_id == "w9"
        assert report.query == {"gpu": "NVIDIA", "status": "unhealthy", "check": "_disk_check",
                                "reason": "RuntimeError: disk full", "runpod_version": SDK_VERSION}
        assert api.violations() == []


def test_sequence_diagram_collapses_what_repeats():
    def call(seq: int, route: str, status: int, query: dict[str, str], *, job: str | None = None,
             body: Any = None, ids: tuple[str, ...] = ()) -> Call:
        return Call(seq, float(seq), "POST" if route.startswith("job-done") else "GET", route, "/", query,
                    job_id=job, body=body, status=status, t_answered=float(seq), answered_ids=list(ids))

    idle = {"gpu": "NVIDIA", "job_in_progress": "0"}
    done = {"gpu": "NVIDIA", "isStream": "false"}
    calls = [
        call(1, "job-take", 204, idle), call(2, "ping", 200, {"runpod_version": SDK_VERSION}),
        call(3, "job-take", 204, idle),
        call(4, "job-take", 200, idle, ids=("0123-long-id",)),
        call(5, "job-done", 200, done, job="0123-long-id", body={"status": "IN_PROGRESS", "output": {}}),
        call(6, "ping", 200, {"job_id": "0123-long-id"}),
        call(7, "job-done", 200, done, job="0123-long-id", body={"status": "IN_PROGRESS", "output": {}}),
        call(8, "job-done", 200, done, job="0123-long-id",
             body={"error": json.dumps({"code": "EXECUTION_ERROR"})}),
        call(9, "job-stop", 200, {}, ids=("0123-long-id",)),
    ]
    assert to_mermaid(calls, job_names={"0123-long-id": "job-1"}) == """sequenceDiagram
    participant R as RunPod job API
    participant W as worker
    W->>R: GET job-take (job_in_progress=0) ×2
    R-->>W: 204 no job
    W->>R: GET ping
    R-->>W: 200
    W->>R: GET job-take (job_in_progress=0)
    R-->>W: 200 job job-1
    W->>R: POST job-done isStream=false status=IN_PROGRESS ×2
    R-->>W: 200
    W->>R: GET ping (job_id=job-1)
    R-->>W: 200
    W->>R: POST job-done isStream=false error EXECUTION_ERROR
    R-->>W: 200
    W->>R: GET job-stop
    R-->>W: 200 jobsToStop [job-1]
"""


# ---------------------------------------------------------------------- (a) results, as the local API gives them


def _corrupt_png() -> str:
    return base64.b64encode(base64.b64decode(png_b64())[:40]).decode()


def _bad_node_workflow() -> dict[str, Any]:
    wf = empty_image_workflow()
    wf["2"]["class_type"] = "SaveImageThatDoesNotExist"
    return wf


CASES: dict[str, dict[str, Any]] = {
    "test_input": json.loads((REPO_ROOT / "test_input.json").read_text())["input"],
    "blue_image": {"workflow": empty_image_workflow(color=0x0000FF)},
    "invalid_workflow": {"workflow": _bad_node_workflow()},
    "invalid_input": {"workflow": empty_image_workflow(), "imagez": []},
    "execution_error": {"workflow": invert_workflow(), "images": [{"name": "in.png", "image": _corrupt_png()}]},
}


def _check_case(name: str, body: dict[str, Any], job_id: str) -> None:
    """The assertions tests/test_worker_sdk.py and test_worker_pipeline.py make, on the posted body."""
    if name == "test_input":
        [entry] = outputs_with_data(body["output"])
        img = decode(entry)
        assert img.size == (128, 128)
        # The real ComfyUI's scaling rounds one channel a step lower than the emulator's (54 and 4, not 55 and 5).
        for point, colour in (((2, 2), (235, 215, 55)), ((64, 64), (5, 55, 245))):
            assert all(abs(a - b) <= 1 for a, b in zip(img.getpixel(point), colour)), (point, img.getpixel(point))
    elif name == "blue_image":
        assert decode(outputs_with_data(body["output"])[0]).getpixel((0, 0)) == (0, 0, 255)
    elif name == "invalid_workflow":
        error = error_of(body)
        assert error["code"] == "INVALID_WORKFLOW" and error["job_id"] == job_id
        assert error["details"]["problems"][0]["node_id"] == "2"
    elif name == "invalid_input":
        error = error_of(body)
        assert error["code"] == "INVALID_INPUT" and error["job_id"] == job_id
        assert error["details"]["errors"] == [{"field": "imagez", "problem": "unknown field; did you mean 'images'?",
                                               "suggestion": "images"}]
    elif name == "execution_error":
        error = error_of(body)
        assert error["code"] == "EXECUTION_ERROR" and error["job_id"] == job_id
        assert (error["details"]["node_id"], error["details"]["class_type"]) == ("1", "LoadImage")
        assert error["details"]["exception_type"] and "node 1 (LoadImage)" in error["message"]
    else:
        raise AssertionError(name)


_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _comparable(value: Any, job_id: str, tmp_dirs: list[str]) -> Any:
    """A result with what differs between two runs of one job taken out: ids, timings, file bytes, paths."""
    if isinstance(value, dict):
        return {k: _comparable(v, job_id, tmp_dirs) for k, v in value.items()
                if k not in {"timings", "data", "sha256", "size", "traceback"}}
    if isinstance(value, list):
        return [_comparable(v, job_id, tmp_dirs) for v in value]
    if isinstance(value, str):
        value = value.replace(job_id, "<job>")
        for tmp in tmp_dirs:
            value = value.replace(tmp, "<tmp>")
        return _UUID.sub("<uuid>", value)
    return value


@pytest.mark.parametrize("case", list(CASES))
def test_result_is_what_the_local_api_gives(platform: RunPodPlatform, worker: WorkerProcess,
                                            local: tuple[LocalWorkerServer, Path], case: str):
    job_input = CASES[case]
    job_id = platform.enqueue(job_input)
    body = platform.wait_result(job_id, timeout=120)
    final = platform.final_post(job_id)
    assert final is not None and final.query["isStream"] == "false" and final.headers["Content-Type"] == FORM
    _check_case(case, body, job_id)
    server, local_tmp = local
    answer = server.runsync(job_input)
    failed = "error" in body
    assert platform.job_status(job_id) == ("FAILED" if failed else "COMPLETED")
    assert answer["status"] == ("FAILED" if failed else "COMPLETED"), answer
    tmps = [str(worker.workdir), str(local_tmp)]
    if failed:
        mine, theirs = json.loads(body["error"]), json.loads(answer["error"])
        assert _comparable(mine, job_id, tmps) == _comparable(theirs, answer["id"], tmps)
    else:
        assert set(body) == {"output"}
        assert _comparable(body["output"], job_id, tmps) == _comparable(answer["output"], answer["id"], tmps)
        for mine, theirs in zip(outputs_with_data(body["output"]), outputs_with_data(answer["output"]), strict=True):
            assert decode(mine).tobytes() == decode(theirs).tobytes()


# ---------------------------------------------------------------------- (b) the calls of one job


def test_one_job_take_progress_result_and_pings(platform: RunPodPlatform, emulated: WorkerProcess):
    with slow_nodes(emulated):
        job_id = platform.enqueue({"workflow": empty_image_workflow(color=0x00FF00)})
        body = platform.wait_result(job_id, timeout=60)
    take = platform.wait_taken(job_id)
    final = platform.final_post(job_id)
    assert final is not None and "error" not in body
    assert take.route == "job-take" and take.status == 200 and take.answered_ids == [job_id]
    assert take.query == {"gpu": "NVIDIA", "job_in_progress": "0"}
    assert take.t_answered is not None

    posts = platform.posts_for(job_id)
    assert [c for c in posts if c.is_final] == [final]  # one result, sent once
    assert final.query == {"gpu": "NVIDIA", "isStream": "false"} and set(final.body) == {"output"}
    assert all(c.route == "job-done" and c.t > take.t_answered for c in posts)
    assert posts[0].is_progress  # the first post is a progress update, not the result
    progress = [c for c in posts if c.is_progress]
    before = [c for c in progress if c.t < final.t]
    assert len(before) >= 2  # the start, and a node later (each node takes SLOW_NODE seconds)
    for c in progress:
        assert c.query == {"gpu": "NVIDIA", "isStream": "false"}
        assert set(c.body) == {"status", "output"}
        assert c.body["output"]["prompt_id"] == body["output"]["prompt_id"]
        assert c.body["output"]["nodes_total"] == 2
    assert before[0].body["output"]["stage"] == "running"
    for c in posts:
        assert c.headers["X-Request-ID"] == job_id and c.headers["Content-Type"] == FORM
        assert c.headers["Authorization"] == platform.api_key
    assert platform.job(job_id).result == body and platform.job_status(job_id) == "COMPLETED"

    # With one job at a time the SDK asks for no other job while this one runs...
    during = [c for c in platform.calls() if c.route.startswith("job-take") and take.t_answered < c.t < final.t]
    assert during == []
    # ...and then asks again, saying it holds none.
    [after, *_] = platform.wait_calls("job-take", where=lambda c: c.t > final.t)
    assert after.query["job_in_progress"] == "0"
    # The heartbeat names the job while it runs (the SDK mirrors its job list to the ping process).
    pings = [c for c in platform.calls("ping") if take.t_answered + 0.2 < c.t < final.t]
    assert pings and all(c.ping_job_ids == [job_id] for c in pings)
    assert all(c.query["runpod_version"] == SDK_VERSION for c in pings)
    # ...and stops once the result is in.
    [later, *_] = platform.wait_calls("ping", where=lambda c: c.t > final.t + 0.5)
    assert later.ping_job_ids == []
    # The stop channel is polled throughout.
    assert [c for c in platform.calls("job-stop") if take.t < c.t < final.t]

    diagram = to_mermaid([c for c in platform.calls() if take.t <= c.t <= after.t], job_names={job_id: "job-1"})
    assert "W->>R: GET job-take (job_in_progress=0)\n    R-->>W: 200 job job-1" in diagram
    assert "POST job-done isStream=false status=IN_PROGRESS" in diagram
    assert "W->>R: POST job-done isStream=false output\n" in diagram
    assert "GET ping (job_id=job-1)" in diagram
    [parsed] = mermaid.parse([mermaid.Diagram("recorded", diagram)])
    assert parsed.ok and parsed.type == "sequence", parsed.error
    # docs/runpod.md draws the same loop, recorded the same way (python -m tests.platform).
    documented = (REPO_ROOT / "docs" / "runpod.md").read_text()
    documented = documented[documented.index("<!-- BEGIN production-loop -->"):
                            documented.index("<!-- END production-loop -->")]
    for step in ("W->>R: GET job-take (job_in_progress=0)\n    R-->>W: 200 job job-1",
                 "W->>R: POST job-done isStream=false status=IN_PROGRESS", "W->>R: GET job-stop",
                 "W->>R: GET ping (job_id=job-1)", "W->>R: POST job-done isStream=false output\n    R-->>W: 200"):
        assert step in diagram and step in documented, step


def test_progress_is_applied_before_the_result(platform: RunPodPlatform, emulated: WorkerProcess):
    platform.set_progress_delay(0.3, 0.6)
    try:
        with slow_nodes(emulated, 0.2):
            job_id = platform.enqueue({"workflow": empty_image_workflow(color=0x0000AA)})
            platform.wait_result(job_id, timeout=60)
        posts = platform.posts_for(job_id)
        platform.wait_for(lambda: all(c.status is not None for c in platform.posts_for(job_id)), 10, "answers")
    finally:
        platform.set_progress_delay(0)
    assert [c for c in posts if c.is_progress]
    assert platform.late_progress(job_id) == []


@pytest.mark.slow
def test_300_jobs_with_delayed_progress_posts_never_end_on_a_progress_post(tmp_path: Path):
    """Progress posts held by the platform for a random time: the worker waits for the one in flight before
    it returns the result, so for every job the last post RunPod applies is the result."""
    with RunPodPlatform() as api, WorkerProcess(api, tmp_path, env={"MAX_CONCURRENCY": "16"}) as proc:
        proc.wait_polling(60)
        api.set_progress_delay(0.0, 0.15)
        ids = api.enqueue_many([{"workflow": empty_image_workflow(color=i)} for i in range(300)])
        for job_id in ids:
            assert "output" in api.wait_result(job_id, timeout=300)
        api.wait_for(lambda: all(c.status is not None for c in api.calls() if c.route == "job-done"), 10,
                     "every post answered")
        progress_posts = 0
        for job_id in ids:
            applied = sorted((c for c in api.posts_for(job_id) if c.status == 200), key=lambda c: c.t_answered)
            assert applied[-1].is_final, (job_id, [c.body.get("status") for c in applied])
            assert api.late_progress(job_id) == []
            progress_posts += sum(1 for c in applied if c.is_progress)
        assert progress_posts >= 300  # every job posted progress, each ahead of its result
        assert api.violations() == []


def test_out_of_memory_is_run_again_after_free_then_completes(platform: RunPodPlatform, emulated: WorkerProcess):
    emulated.set_emulator_faults(oom_on_node="EmptyImage", oom_until_free=True)
    try:
        job_id = platform.enqueue({"workflow": empty_image_workflow(color=0x0A0B0C)})
        body = platform.wait_result(job_id, timeout=60)
    finally:
        emulated.set_emulator_faults(oom_on_node=None, oom_until_free=False)
    assert "output" in body, body
    assert any("ran out of GPU memory once" in w for w in body["output"]["warnings"])
    assert emulated.comfyui("GET", "/__emulator__/free_calls")[-1] == {"unload_models": True, "free_memory": True}


def test_out_of_memory_twice_fails_saying_what_was_tried(platform: RunPodPlatform, emulated: WorkerProcess):
    emulated.set_emulator_faults(oom_on_node="EmptyImage")
    try:
        job_id = platform.enqueue({"workflow": empty_image_workflow(color=0x0C0B0A)})
        error = error_of(platform.wait_result(job_id, timeout=60))
    finally:
        emulated.set_emulator_faults(oom_on_node=None)
    assert error["code"] == "OUT_OF_MEMORY" and error["retryable"] is False
    assert error["details"]["retried"] is True and error["details"]["memory_freed"] is True


def test_a_result_post_answered_500_is_sent_again(platform: RunPodPlatform, worker: WorkerProcess):
    """The SDK retries a result (aiohttp_retry, Fibonacci, 3 attempts): the platform keeps the first it accepts."""
    platform.fail_next_results(500, 1)
    job_id = platform.enqueue({"workflow": empty_image_workflow(color=0x123456)})
    body = platform.wait_result(job_id, timeout=60)
    finals = [c for c in platform.posts_for(job_id) if c.is_final]
    assert [c.status for c in finals] == [500, 200]
    assert finals[0].body == finals[1].body == body
    assert finals[1].t - finals[0].t >= 1.5  # the first Fibonacci pause is 2 s
    assert platform.job_status(job_id) == "COMPLETED"


def test_flashboot_400_means_no_job_and_the_sdk_asks_again(platform: RunPodPlatform, worker: WorkerProcess):
    start = len(platform.calls())
    platform.answer_next_takes(400, 3)
    job_id = platform.enqueue({"workflow": empty_image_workflow(color=0x654321)})
    assert "output" in platform.wait_result(job_id, timeout=60)
    takes = [c for c in platform.calls()[start:] if c.route == "job-take"]
    assert [c.status for c in takes[:4]] == [400, 400, 400, 200]
    assert takes[3].answered_ids == [job_id]


# ---------------------------------------------------------------------- (c) stop


def test_job_stop_cancels_the_running_job(platform: RunPodPlatform, emulated: WorkerProcess):
    with slow_nodes(emulated, 1.0):
        job_id = platform.enqueue({"workflow": _long_workflow(0xAA0000)})  # four seconds
        platform.wait_for(lambda: [c for c in platform.posts_for(job_id) if c.is_progress], 30, "first progress")
        stopped_at = time.monotonic()
        platform.stop_job(job_id)
        [signal] = platform.wait_calls("job-stop", where=lambda c: job_id in c.answered_ids, timeout=10)
        assert signal.answered_ids == [job_id]
        # The worker interrupts ComfyUI and removes the prompt: its queue empties once the node running ends.
        platform.wait_for(lambda: emulated.comfyui("GET", "/queue") == {"queue_running": [], "queue_pending": []},
                          5, "ComfyUI's queue empty")
        assert time.monotonic() - stopped_at < 3.5  # the graph would hold the queue for four seconds
        # The heartbeat stops naming it.
        platform.wait_for(lambda: [c for c in platform.calls("ping") if c.t > signal.t_answered + 0.2
                                   and job_id not in c.ping_job_ids], 5, "a ping without the job")
    assert f"job={job_id} outcome=cancelled" in emulated.log_text()
    assert platform.job_status(job_id) == "CANCELLED"
    # Nothing claims it completed: the SDK posts no result for a stopped job (a worker may say CANCELLED).
    final = platform.final_post(job_id)
    assert final is None or json.loads(final.body["error"])["code"] == "CANCELLED"
    # The worker goes on with the next job.
    next_id = platform.enqueue({"workflow": empty_image_workflow(color=0x00AA00)})
    assert decode(outputs_with_data(platform.wait_result(next_id, 60)["output"])[0]).getpixel((0, 0)) == (0, 170, 0)
    assert platform.final_post(job_id) is final  # still no result for the stopped job


# ---------------------------------------------------------------------- (d) two jobs at once


def test_max_concurrency_2_takes_a_batch_then_single_jobs(fleet: dict[str, tuple[RunPodPlatform, WorkerProcess]]):
    api, proc = fleet["pair"]
    proc.wait_polling(60)
    with slow_nodes(proc, 0.5):
        first, second = api.enqueue_many([{"workflow": _long_workflow(0x0000FF)},
                                          {"workflow": _long_workflow(0xFF0000)}])
        results = {job_id: api.wait_result(job_id, 60) for job_id in (first, second)}
    [batch] = api.takes_of(first)
    assert api.takes_of(second) == [batch]  # both in one call
    assert batch.route == "job-take-batch" and batch.answered_ids == [first, second]
    assert batch.query == {"gpu": "NVIDIA", "batch_size": "2", "job_in_progress": "0"}
    # No crossing: each job gets its own colour back (both inverted twice).
    assert decode(outputs_with_data(results[first]["output"])[0]).getpixel((0, 0)) == (0, 0, 255)
    assert decode(outputs_with_data(results[second]["output"])[0]).getpixel((0, 0)) == (255, 0, 0)
    for job_id in (first, second):
        assert all(c.headers["X-Request-ID"] == job_id for c in api.posts_for(job_id))
    finals = sorted((api.final_post(first), api.final_post(second)), key=lambda c: c.t)
    # Both held at once: a heartbeat names the two, and no job is asked for while both run.
    assert [c for c in api.calls("ping") if sorted(c.ping_job_ids) == sorted([first, second])]
    assert not [c for c in api.calls() if c.route.startswith("job-take") and batch.t_answered < c.t < finals[0].t]
    # With one job still running, the SDK asks for the one it has room for on the single-job route.
    while_one = [c for c in api.calls() if c.route.startswith("job-take") and finals[0].t < c.t < finals[1].t]
    assert while_one and all(c.route == "job-take" and c.query["job_in_progress"] == "1" for c in while_one)
    assert api.violations() == []


# ---------------------------------------------------------------------- what ComfyUI's process is given


def _comfyui_environment(proc: WorkerProcess) -> set[str]:
    """The names of the variables the worker's ComfyUI runs with."""
    comfy = [pid for pid in proc.descendants() if b"main.py" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert len(comfy) == 1, comfy
    raw = Path(f"/proc/{comfy[0]}/environ").read_bytes()
    return {item.split(b"=", 1)[0].decode() for item in raw.split(b"\0") if item}


def test_comfyui_gets_none_of_runpods_variables(worker: WorkerProcess):
    """RunPod's key and the job API's URLs are the worker's alone (DESIGN): ComfyUI's custom nodes never see
    them, nor the storage keys the worker was given."""
    names = _comfyui_environment(worker)
    assert "PATH" in names
    assert sorted(n for n in names if n.startswith("RUNPOD_")) == []
    assert not names & {"BUCKET_ACCESS_KEY_ID", "BUCKET_SECRET_ACCESS_KEY", "GDRIVE_CREDENTIALS", "HF_TOKEN"}


def test_results_are_not_written_to_the_log(platform: RunPodPlatform, worker: WorkerProcess):
    job_id = platform.enqueue(CASES["test_input"])
    data = outputs_with_data(platform.wait_result(job_id, timeout=120)["output"])[0]["data"]
    assert len(data) > 200
    time.sleep(0.2)
    log = worker.log_text()
    assert data[-200:] not in log and CASES["test_input"]["images"][0]["image"][-200:] not in log
    assert f"job={job_id} outcome=completed" in log


def test_results_are_not_written_to_the_log_even_at_debug(tmp_path: Path):
    """RUNPOD_LOG_LEVEL=DEBUG makes the SDK log every job and result whole; the worker's redaction still
    keeps outputs and inputs out."""
    with RunPodPlatform() as api, WorkerProcess(api, tmp_path, env={"RUNPOD_LOG_LEVEL": "DEBUG",
                                                                    "LOG_LEVEL": "DEBUG"}) as proc:
        job_id = api.enqueue(CASES["test_input"])
        body = api.wait_result(job_id, timeout=120)
        time.sleep(0.2)
        log = proc.log_text()
    data = outputs_with_data(body["output"])[0]["data"]
    assert "Handler output: <" in log and "run_job return: <" in log  # the SDK's lines, payload elided
    assert data[-200:] not in log and CASES["test_input"]["images"][0]["image"][-200:] not in log
    assert not re.search(r"[A-Za-z0-9+/]{200,}", log)


def test_refresh_after_jobs_takes_no_more_jobs(fleet: dict[str, tuple[RunPodPlatform, WorkerProcess]]):
    api, proc = fleet["refresh"]
    proc.wait_polling(60)
    first = api.enqueue({"workflow": empty_image_workflow(color=1)})
    assert "stopPod" not in api.wait_result(first, 60)
    second = api.enqueue({"workflow": empty_image_workflow(color=2)})
    assert api.wait_result(second, 60)["stopPod"] is True
    third = api.enqueue({"workflow": empty_image_workflow(color=3)})
    with pytest.raises(TimeoutError):
        api.wait_taken(third, 2.5)  # a worker that goes on asks again within a second or so
    assert api.job_status(third) == "IN_QUEUE"
    assert proc.wait_exit(15) is not None
    takes = [c for c in api.calls() if c.route.startswith("job-take") and c.answered_ids]
    assert [c.answered_ids for c in takes] == [[first], [second]]  # exactly two jobs taken
    assert "takes no further job: a fresh worker is due after 2 jobs" in proc.log_text()


def test_worker_whose_comfyui_cannot_start_takes_no_job(fleet: dict[str, tuple[RunPodPlatform, WorkerProcess]]):
    api, proc = fleet["no_comfyui"]
    [job_id] = SPECIALS["no_comfyui"].queued
    api.wait_for(lambda: api.takes_of(job_id) or not proc.alive(), 60, "a take or the worker's exit")
    assert api.takes_of(job_id) == [] and api.job_status(job_id) == "IN_QUEUE"
    assert proc.wait_exit(30) == 1
    assert not [c for c in api.calls() if c.route.startswith("job-take")]
    [report] = [c for c in api.calls("ping") if c.is_unhealthy_report]
    assert report.query["check"] == "check_fitness"
    assert "ComfyUI exited with code 3" in report.query["reason"]
    log = proc.log_text()
    assert "the worker cannot start: ComfyUI is not ready: ComfyUI exited with code 3" in log
    assert "ComfyUI's last" in log and "Emulated start-up failure" in log  # the log tail says why
    assert "Worker is unhealthy, exiting." in log


def test_a_gpu_host_whose_comfyui_runs_on_the_cpu_takes_no_job(fleet: dict[str, tuple[RunPodPlatform,
                                                                                        WorkerProcess]]):
    api, proc = fleet["cpu_on_gpu_host"]
    [job_id] = SPECIALS["cpu_on_gpu_host"].queued
    assert proc.wait_exit(60) == 1
    assert api.takes_of(job_id) == [] and api.job_status(job_id) == "IN_QUEUE"
    [report] = [c for c in api.calls("ping") if c.is_unhealthy_report]
    assert "1 NVIDIA GPU(s) but ComfyUI runs on cpu" in report.query["reason"]


def test_worker_turns_off_the_sdk_checks_itself(fleet: dict[str, tuple[RunPodPlatform, WorkerProcess]],
                                                tmp_path_factory: pytest.TempPathFactory):
    """Started without the variables, on a host where nvidia-smi answers and memory is short by the SDK's
    threshold, with a torch that records its import: the worker takes jobs, and never imports torch."""
    api, proc = fleet["sdk_checks"]
    proc.wait_polling(60)
    assert "torch" not in Path(f"/proc/{proc.pid}/maps").read_text()
    log = proc.log_text()
    assert "Running 1 fitness check(s)" in log and "All fitness checks passed" in log  # the worker's own only
    assert "ComfyUI runs on cuda:0 NVIDIA H200" in log
    assert not [c for c in api.calls("ping") if c.is_unhealthy_report]
    job_id = api.enqueue({"workflow": empty_image_workflow(color=4)})
    assert "output" in api.wait_result(job_id, 60)
    imports = Path(proc.env["TORCH_IMPORT_LOG"])
    recorded = imports.read_text().splitlines() if imports.exists() else []
    assert not [line for line in recorded if line.split()[0] == str(proc.pid)], recorded


def _sd_workflow(steps: int) -> dict[str, Any]:
    from .captures import capture

    graph = json.loads(json.dumps(capture("sd_txt2img_with_previews_request.json")["prompt"]))
    graph["3"]["inputs"]["steps"] = steps
    return graph


def test_stream_mode_posts_every_chunk_to_job_stream_and_the_aggregate_last(
        fleet: dict[str, tuple[RunPodPlatform, WorkerProcess]]):
    api, proc = fleet["stream"]
    proc.wait_polling()
    proc.set_emulator_faults(node_delay=0.05)
    try:
        with event_receiver() as receiver:
            job_id = api.enqueue({"workflow": _sd_workflow(steps=12), "events": {"url": receiver.url},
                                  "output_config": {"previews": {"max_per_second": 10}}})
            body = api.wait_result(job_id, timeout=60)
            events = receiver.accepted
    finally:
        proc.set_emulator_faults(node_delay=0.0)
    final = api.final_post(job_id)
    assert final is not None and api.job_status(job_id) == "COMPLETED"
    # Each chunk went to job-stream as it was yielded, before the result, in the order of the job's events.
    streamed = [c for c in api.posts_for(job_id) if c.route == "job-stream"]
    assert streamed and all(c.t < final.t and set(c.body) == {"output"} for c in streamed)
    chunks = [c.body["output"] for c in streamed]
    kinds = [c.get("event", "result") for c in chunks]
    assert kinds[0] == "progress" and "preview" in kinds and kinds[-2:] == ["output", "result"]
    assert [c["seq"] for c in chunks[:-1]] == sorted(c["seq"] for c in chunks[:-1])
    # The result post carries the aggregate (return_aggregate_stream): every chunk, the job's result last.
    assert final.query == {"gpu": "NVIDIA", "isStream": "true"} and body == {"output": chunks}
    result = body["output"][-1]
    assert result["outputs"][0]["node_id"] == "9" and result["images"][0]["type"] == "base64"
    assert api.job(job_id).stream == chunks
    # The caller's URL heard the same events, signed, and the final one before the job's result went out.
    assert [e["seq"] for e in events[:-1]] == [c["seq"] for c in chunks[:-1]]
    assert events[-1]["event"] == "final" and events[-1]["output"] == result
    assert receiver.received[-1].t < final.t and set(receiver.verdicts()) == {"accepted"}


def test_stream_mode_failure_fails_the_job_with_the_same_error(fleet: dict[str, tuple[RunPodPlatform,
                                                                                     WorkerProcess]]):
    api, proc = fleet["stream"]
    proc.wait_polling()
    job_id = api.enqueue({"workflow": {"1": {"class_type": "NoSuchNode", "inputs": {}}}})
    body = api.wait_result(job_id, timeout=60)
    assert error_of(body)["code"] == "INVALID_WORKFLOW" and api.job_status(job_id) == "FAILED"
