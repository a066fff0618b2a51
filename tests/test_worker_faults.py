"""ComfyUI misbehaving under a job: death, dropped websocket, lost completion message, failed start, cancel."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time

import pytest

from comfy_worker.job import run_job

from .workerkit import boot_runtime, empty_image_workflow, error_of, real_comfyui, run

TARGETS = ["emulator"] + (["real"] if real_comfyui() else [])


def slow_workflow(target: str) -> dict:
    if target == "real":
        # Heavy enough on a CPU to still be running a few seconds after submission.
        return {
            "1": {"class_type": "EmptyImage", "inputs": {"width": 4096, "height": 4096, "batch_size": 8,
                                                          "color": 123}},
            "2": {"class_type": "ImageBlur", "inputs": {"image": ["1", 0], "blur_radius": 31, "sigma": 10.0}},
            "3": {"class_type": "ImageBlur", "inputs": {"image": ["2", 0], "blur_radius": 31, "sigma": 10.0}},
            "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "slow"}},
        }
    return empty_image_workflow()


@pytest.mark.parametrize("target", TARGETS)
def test_comfyui_killed_mid_job_fails_fast_then_recovers(tmp_path, target):
    if target == "real":
        pytest.importorskip("requests")
    runtime, settings = boot_runtime(tmp_path, real=target == "real")
    try:
        if target == "emulator":
            runtime.client._request("POST", "/__emulator__/faults", json={"node_delay": 30})
        pid = runtime.process.pid

        def kill_soon():
            time.sleep(1.5)
            os.kill(pid, signal.SIGKILL)

        threading.Thread(target=kill_soon, daemon=True).start()
        started = time.monotonic()
        err = error_of(run(runtime, settings, {"workflow": slow_workflow(target)}))
        elapsed = time.monotonic() - started
        assert err["code"] == "COMFYUI_UNAVAILABLE"
        assert "exited" in err["message"]
        assert "log_tail" not in err["details"], "ComfyUI's log is every job's: it goes to the logs only"
        assert elapsed - 1.5 < 5, f"the job took {elapsed:.1f} s to fail after ComfyUI died"
        # The supervisor restarts ComfyUI; the next job waits for it and succeeds.
        result = run(runtime, settings, {"workflow": empty_image_workflow()}, job_id="after-restart")
        assert "error" not in result, result
        assert runtime.process.pid != pid and runtime.process.generation == 2
    finally:
        runtime.shutdown()


def test_dropped_websocket_does_not_hang_the_job(tmp_path):
    runtime, settings = boot_runtime(tmp_path, faults={"node_delay": 0.3})
    try:
        runtime.client._request("POST", "/__emulator__/faults", json={"node_delay": 0.3, "drop_ws_after": 4})
        result = run(runtime, settings, {"workflow": empty_image_workflow()})
        assert "error" not in result, result
        assert len(result["outputs"]) == 1
        assert runtime.events.reconnects >= 1
    finally:
        runtime.shutdown()


def test_lost_completion_message_is_recovered_from_history(tmp_path):
    runtime, settings = boot_runtime(tmp_path)
    try:
        runtime.client._request("POST", "/__emulator__/faults", json={"drop_final_message": True})
        result = run(runtime, settings, {"workflow": empty_image_workflow()})
        assert "error" not in result, result
        assert len(result["outputs"]) == 1
    finally:
        runtime.shutdown()


def test_comfyui_that_never_starts_fails_jobs_clearly(tmp_path, caplog):
    runtime, settings = boot_runtime(tmp_path, faults={"exit_at_start": 3}, COMFYUI_RESTART="false")
    try:
        assert runtime.boot_error and "code 3" in runtime.boot_error
        started = time.monotonic()
        err = error_of(run(runtime, settings, {"workflow": empty_image_workflow()}))
        assert time.monotonic() - started < 10
        assert err["code"] == "COMFYUI_UNAVAILABLE"
        assert "code 3" in err["message"]
        # ComfyUI's log lines go to the operator's logs; the caller gets the exit code and the fatal line.
        assert "log_tail" not in err["details"]
        assert "Emulated start-up failure" in err["message"]
        assert any("ComfyUI's last" in r.getMessage() and "Emulated start-up failure" in r.getMessage()
                   for r in caplog.records), "the log tail belongs in the worker's logs"
    finally:
        runtime.shutdown()


def test_missing_comfyui_checkout(tmp_path):
    runtime, settings = boot_runtime(tmp_path, COMFYUI_DIR=str(tmp_path / "nowhere"))
    try:
        err = error_of(run(runtime, settings, {"workflow": empty_image_workflow()}))
        assert err["code"] == "COMFYUI_UNAVAILABLE"
        assert "main.py" in err["message"]
    finally:
        runtime.shutdown()


def test_cancel_stops_only_this_prompt(tmp_path):
    runtime, settings = boot_runtime(tmp_path)
    try:
        runtime.client._request("POST", "/__emulator__/faults", json={"node_delay": 2})

        async def scenario():
            task = asyncio.create_task(run_job({"id": "c1", "input": {"workflow": empty_image_workflow()}},
                                               runtime, settings, lambda p: None))
            await asyncio.sleep(0.8)
            task.cancel()
            started = time.monotonic()
            with pytest.raises(asyncio.CancelledError):
                await task
            return time.monotonic() - started

        took = asyncio.run(scenario())
        assert took < 3
        # Interruption is cooperative: the running node finishes, then the prompt stops.
        deadline = time.monotonic() + 6
        while runtime.client.queue() != {"queue_running": [], "queue_pending": []}:
            assert time.monotonic() < deadline, runtime.client.queue()
            time.sleep(0.1)
        runtime.client._request("POST", "/__emulator__/faults", json={"node_delay": 0})
        result = run(runtime, settings, {"workflow": empty_image_workflow(color=1)}, job_id="after-cancel")
        assert "error" not in result, result
    finally:
        runtime.shutdown()
