"""What the worker adds to the runpod SDK: redacted logs, ordered progress posts closed before the result."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

from comfy_worker.logs import RedactingFilter, redact
from comfy_worker.sdk import ProgressPoster, disable_sdk_checks, redact_sdk_logs

ROOT = Path(__file__).resolve().parents[1]

B64 = base64.b64encode(os.urandom(3000)).decode()


def test_redact_removes_payloads_and_base64_but_keeps_ordinary_lines():
    assert B64 not in redact(f"Handler output: {{'outputs': [{{'data': '{B64}'}}]}}")
    assert redact("Handler output: {'x': 1}").startswith("Handler output: <")
    assert redact(f"uploaded data:image/png;base64,{B64} now") == \
        f"uploaded <{len('data:image/png;base64,') + len(B64)} characters of encoded data> now"
    line = "job=abc stage=deliver outcome=ok seconds=0.0123 sha256=" + "ab" * 32
    assert redact(line) == line
    assert len(redact("x" * 20000)) < 9000


def test_the_sdk_logger_never_prints_a_result(capsys, monkeypatch):
    monkeypatch.delenv("RUNPOD_LOG_LEVEL", raising=False)
    monkeypatch.delenv("RUNPOD_ENDPOINT_ID", raising=False)
    redact_sdk_logs()
    from runpod.serverless.modules.rp_logger import RunPodLogger

    logger = RunPodLogger()
    assert logger.level == "INFO"
    logger.info(f"Job result: {{'output': {{'images': [{{'data': '{B64}'}}]}}}}")
    logger.debug(f"Handler output: {B64}", "job-1")  # DEBUG is off; even if on, it would be redacted
    logger.info(f"something with {B64} inside", "job-2")
    printed = capsys.readouterr().out
    assert B64 not in printed
    assert "Job result: <" in printed and "job-2 | something with <" in printed


def test_the_worker_log_filter_redacts_its_own_records():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "got %s", (B64,), None)
    assert RedactingFilter().filter(record)
    assert B64 not in record.getMessage()


def test_disable_sdk_checks_sets_both_switches(monkeypatch):
    monkeypatch.setenv("RUNPOD_SKIP_GPU_CHECK", "false")
    monkeypatch.delenv("RUNPOD_SKIP_AUTO_SYSTEM_CHECKS", raising=False)
    disable_sdk_checks()
    assert os.environ["RUNPOD_SKIP_GPU_CHECK"] == "true"
    assert os.environ["RUNPOD_SKIP_AUTO_SYSTEM_CHECKS"] == "true"


def test_progress_posts_are_ordered_latest_wins_and_none_after_close():
    log: list[tuple[str, object]] = []
    in_flight = 0

    async def post(payload):
        nonlocal in_flight
        in_flight += 1
        assert in_flight == 1, "two progress posts at once"
        log.append(("start", payload["n"]))
        await asyncio.sleep(random.uniform(0, 0.02))
        log.append(("end", payload["n"]))
        in_flight -= 1

    async def scenario():
        poster = ProgressPoster({"id": "job"}, post)
        for n in range(50):
            poster.send({"n": n})
            await asyncio.sleep(random.uniform(0, 0.004))
        await poster.aclose()
        log.append(("result", None))
        poster.send({"n": 999})  # too late: dropped
        await asyncio.sleep(0.05)

    random.seed(7)
    asyncio.run(scenario())
    assert log[-1] == ("result", None)
    numbers = [n for kind, n in log if kind == "start"]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
    assert 999 not in numbers
    assert len(numbers) < 50  # payloads queued behind a slow post were replaced by newer ones
    assert all(kind == "end" for kind, _ in log[1:-1:2])


def test_a_stuck_progress_post_is_abandoned_before_the_result():
    async def post(payload):
        await asyncio.sleep(60)

    async def scenario():
        poster = ProgressPoster({"id": "job"}, post, close_timeout=0.2)
        poster.send({"n": 1})
        await asyncio.sleep(0.01)
        await poster.aclose()
        return poster

    poster = asyncio.run(asyncio.wait_for(scenario(), 5))
    assert poster.sent == 0


def test_the_sdk_is_imported_without_starting_a_process_and_still_names_the_processor():
    # py-cpuinfo would start a Python process of its own to find the name (over a second of CPU at every worker
    # start). In a fresh interpreter: this one may have imported the SDK already.
    script = textwrap.dedent("""
        import json, subprocess, sys
        started = []
        popen = subprocess.Popen.__init__
        def counting(self, args, *rest, **kwargs):
            if list(args)[:1] == [sys.executable]:  # importing cpuinfo runs `file` and `uname`: cheap
                started.append(args)
            popen(self, args, *rest, **kwargs)
        subprocess.Popen.__init__ = counting
        import cpuinfo
        probe = cpuinfo.get_cpu_info
        from comfy_worker import sdk
        sdk.import_sdk()
        from runpod.serverless.utils import rp_debugger
        print(json.dumps({"started": [str(a) for a in started], "processor": rp_debugger.PROCESSOR,
                          "name": sdk.processor_name(), "restored": cpuinfo.get_cpu_info is probe}))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src")}, check=True)
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["started"] == []
    assert seen["processor"] == seen["name"] and seen["name"]
    assert seen["restored"]
