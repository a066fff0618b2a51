"""Timeouts, the stall watchdog, freeing memory, refreshing the worker and overlapping jobs."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time

from PIL import Image

from comfy_run import outputs_with_data
from comfy_worker.app import create_worker
from comfy_worker.job import run_job
from comfy_worker.settings import Settings

from .workerkit import boot_runtime, empty_image_workflow, error_of, run, worker_env


def faults(runtime, **values):
    runtime.client._request("POST", "/__emulator__/faults", json=values)


def test_timeout_interrupts_and_dequeues_and_next_job_runs(tmp_path):
    runtime, settings = boot_runtime(tmp_path)
    try:
        faults(runtime, node_delay=1.0)
        started = time.monotonic()
        err = error_of(run(runtime, settings, {"workflow": empty_image_workflow(),
                                               "execution_config": {"timeout": 0.8}}))
        assert err["code"] == "TIMEOUT" and err["retryable"]
        assert err["details"]["timeout"] == 0.8
        assert time.monotonic() - started < 8
        assert "timings" in err
        assert runtime.client.queue() == {"queue_running": [], "queue_pending": []}
        faults(runtime, node_delay=0)
        assert "error" not in run(runtime, settings, {"workflow": empty_image_workflow(color=5)}, job_id="next")
    finally:
        runtime.shutdown()


def test_timeout_ceiling_lowers_request(tmp_path):
    runtime, settings = boot_runtime(tmp_path, JOB_TIMEOUT_MAX="0.5")
    try:
        faults(runtime, node_delay=1.0)
        err = error_of(run(runtime, settings, {"workflow": empty_image_workflow(),
                                               "execution_config": {"timeout": 3600}}))
        assert err["code"] == "TIMEOUT" and err["details"]["timeout"] == 0.5
    finally:
        runtime.shutdown()


def test_hung_comfyui_is_noticed_and_restarted(tmp_path):
    runtime, settings = boot_runtime(tmp_path, STALL_TIMEOUT="1.5", INTERRUPT_GRACE="1")
    try:
        faults(runtime, hang_on_node="SaveImage")
        pid = runtime.process.pid
        started = time.monotonic()
        err = error_of(run(runtime, settings, {"workflow": empty_image_workflow()}))
        assert err["code"] == "TIMEOUT" and err["details"]["stalled"] is True
        assert err["details"]["comfyui_restarted"] is True
        assert time.monotonic() - started < 15
        result = run(runtime, settings, {"workflow": empty_image_workflow(color=9)}, job_id="after-hang")
        assert "error" not in result, result
        assert runtime.process.pid != pid
    finally:
        runtime.shutdown()


def free_calls(runtime):
    return runtime.client._json("GET", "/__emulator__/free_calls")


def test_oom_is_run_again_once_after_free_then_fails_saying_what_was_tried(tmp_path):
    runtime, settings = boot_runtime(tmp_path)
    try:
        faults(runtime, oom_on_node="EmptyImage")
        err = error_of(run(runtime, settings, {"workflow": empty_image_workflow()}))
        assert err["code"] == "OUT_OF_MEMORY" and err["retryable"] is False
        assert err["details"]["node_id"] == "1"
        assert err["details"]["retried"] is True and err["details"]["memory_freed"] is True
        assert len(err["details"]["earlier_prompt_ids"]) == 1
        assert "ran out of memory again" in err["message"]
        assert free_calls(runtime) == [{"unload_models": True, "free_memory": True}]
        faults(runtime, oom_on_node=None)
        assert "error" not in run(runtime, settings, {"workflow": empty_image_workflow(color=3)}, job_id="n")
    finally:
        runtime.shutdown()


def test_oom_that_free_cures_completes_with_a_warning(tmp_path):
    runtime, settings = boot_runtime(tmp_path)
    try:
        faults(runtime, oom_on_node="EmptyImage", oom_until_free=True)
        result = run(runtime, settings, {"workflow": empty_image_workflow()})
        assert "error" not in result, result
        assert len(outputs_with_data(result)) == 1
        assert any("ran out of GPU memory once" in w for w in result["warnings"])
        assert "free_memory" in result["timings"]
        assert free_calls(runtime) == [{"unload_models": True, "free_memory": True}]
    finally:
        runtime.shutdown()


def test_oom_retry_can_be_switched_off_per_job_and_by_the_operator(tmp_path):
    runtime, settings = boot_runtime(tmp_path)
    try:
        faults(runtime, oom_on_node="EmptyImage", oom_until_free=True)
        err = error_of(run(runtime, settings, {"workflow": empty_image_workflow(),
                                               "execution_config": {"retry_on_oom": False}}))
        assert err["code"] == "OUT_OF_MEMORY" and err["retryable"] is True and "retried" not in err["details"]
        assert free_calls(runtime) == []
        off = settings.model_copy(update={"oom_retry": False})
        err = error_of(run(runtime, off, {"workflow": empty_image_workflow(color=5)}, job_id="off"))
        assert err["code"] == "OUT_OF_MEMORY" and free_calls(runtime) == []
        result = run(runtime, off, {"workflow": empty_image_workflow(color=6),
                                    "execution_config": {"retry_on_oom": True}}, job_id="on")
        assert "error" not in result, result
    finally:
        runtime.shutdown()


def test_free_memory_after_reaches_comfyui(tmp_path):
    runtime, settings = boot_runtime(tmp_path)
    calls = []
    original = runtime.client.free
    runtime.client.free = lambda **kw: (calls.append(kw), original(**kw))[1]
    try:
        run(runtime, settings, {"workflow": empty_image_workflow()})
        assert calls == []
        run(runtime, settings, {"workflow": empty_image_workflow(), "execution_config": {"free_memory_after": True}})
        assert calls == [{"unload_models": True, "free_memory": True}]
    finally:
        runtime.shutdown()


def test_refresh_after_n_jobs_and_concurrency_config(tmp_path):
    settings = Settings.from_env(worker_env(tmp_path, REFRESH_WORKER_AFTER_JOBS="2", MAX_CONCURRENCY="2"))
    app = create_worker(settings)
    try:
        assert app.config["concurrency_modifier"](1) == 2
        assert "comfyui_boot" in app.cold_start and "total" in app.cold_start
        job = {"workflow": empty_image_workflow()}
        first = asyncio.run(app.handler({"id": "a", "input": job}))
        second = asyncio.run(app.handler({"id": "b", "input": job}))
        assert "refresh_worker" not in first and second.get("refresh_worker") is True
    finally:
        app.comfy.shutdown()


def test_overlapping_jobs_never_mix_outputs_or_events(tmp_path):
    runtime, settings = boot_runtime(tmp_path)
    try:
        faults(runtime, node_delay=0.2)
        colors = [0x110000 * (i + 1) for i in range(4)]

        async def scenario():
            progress = {i: [] for i in range(4)}
            jobs = [run_job({"id": f"j{i}", "input": {"workflow": empty_image_workflow(color=c, prefix=f"p{i}")}},
                            runtime, settings, progress[i].append) for i, c in enumerate(colors)]
            return await asyncio.gather(*jobs), progress

        results, progress = asyncio.run(scenario())
        for i, (result, color) in enumerate(zip(results, colors)):
            assert "error" not in result, result
            [entry] = outputs_with_data(result)
            pixel = Image.open(io.BytesIO(base64.b64decode(entry["data"]))).convert("RGB").getpixel((0, 0))
            assert pixel == ((color >> 16) & 255, (color >> 8) & 255, color & 255)
            assert all(p["prompt_id"] == result["prompt_id"] for p in progress[i])
    finally:
        runtime.shutdown()


def test_warmup_workflow_runs_before_jobs(tmp_path):
    wf = tmp_path / "warm.json"
    wf.write_text(json.dumps(empty_image_workflow()))
    settings = Settings.from_env(worker_env(tmp_path, WARMUP_WORKFLOW=str(wf)))
    app = create_worker(settings)
    try:
        assert app.cold_start["warmup"] > 0
    finally:
        app.comfy.shutdown()
