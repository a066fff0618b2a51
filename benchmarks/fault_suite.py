"""Fault suite: each fault injected many times at random moments; every job must end with the right
outcome, none may hang, and no output may be lost or reach the wrong job.

Kinds (emulator): kill (ComfyUI SIGKILLed mid-job), ws_drop (websocket closed after a random number of
frames), lost_final (completion messages never sent), hang (a node stalls; each job has an outer timeout
and a hit counts as a hang), oom, node_error, upload_fail (ComfyUI's /upload/image answers 500),
storage_fail (outputs delivered to an S3 endpoint that refuses connections), timeout (the job's own
execution_config.timeout at a random moment), cancel (the job's task cancelled at a random moment), and
pair_* (two concurrent jobs, the fault in one of them). With COMFYUI_DIR (a real ComfyUI) the kinds that need
no emulator hooks run: kill, ws_drop (the worker's socket closed at a random moment), timeout, storage_fail,
cancel, pair_cancel.

Every job's image is a color unique to it, so an output is checked to be its own job's (inverted) color.

Run: python benchmarks/fault_suite.py [--runs 20] [--kinds kill,cancel] [--job-timeout 20]
"""

from __future__ import annotations

import sys
from pathlib import Path

# Runnable as a script from anywhere: the repository root and src/ go on the import path.
sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[1] / "src")]

import argparse
import asyncio
import base64
import contextlib
import io
import json
import logging
import os
import random
import signal
import socket
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from benchmarks.common import color_workflow, pixel_of_png, same_pixel, target_name
from comfy_run import outputs_with_data
from comfy_worker.comfy.client import ComfyUnavailable
from comfy_worker.comfy import HttpComfy
from comfy_worker.errors import WorkerError
from comfy_worker.job import run_job
from comfy_worker.settings import Settings
from tests.workerkit import boot_runtime, real_comfyui

log = logging.getLogger("fault_suite")

OK, CANCELLED, HANG = "ok", "cancelled", "hang"
EMULATOR_KINDS = ["kill", "ws_drop", "lost_final", "hang", "oom", "node_error", "upload_fail", "storage_fail",
                  "timeout", "cancel", "pair_error", "pair_cancel", "pair_ws_drop", "pair_kill"]
REAL_KINDS = ["kill", "ws_drop", "timeout", "storage_fail", "cancel", "pair_cancel"]
NODE_DELAY = 0.2  # emulator: seconds per node, so a job runs long enough to be hit mid-way


@dataclass
class Tally:
    injected: int = 0
    jobs: int = 0
    right: int = 0
    hangs: int = 0
    lost: int = 0
    misdelivered: int = 0
    wrong: list[str] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)  # how the jobs ended, to show where faults hit


@dataclass
class Outcome:
    kind: str  # OK, CANCELLED, HANG or an error code
    result: dict[str, Any] | None = None

    def describe(self) -> str:
        return self.kind if self.result is None else f"{self.kind}: {json.dumps(self.result)[:200]}"


class FaultSuite:
    def __init__(self, runtime: HttpComfy, settings: Settings, *, real: bool, job_timeout: float,
                 seed: int = 1) -> None:
        self.runtime = runtime
        self.settings = settings
        self.real = real
        self.job_timeout = job_timeout
        self.rng = random.Random(seed)
        self.tallies: dict[str, Tally] = {}
        self.colors: set[int] = set()
        self._next_color = 0x203040

    # --- jobs -------------------------------------------------------------------------------------
    def new_color(self) -> int:
        self._next_color = (self._next_color + 0x0A0B0D) & 0xFFFFFF
        self.colors.add(self._next_color)
        return self._next_color

    def workflow(self, color: int, ids: str = "") -> dict[str, Any]:
        size = 1536 if self.real else 64
        graph = color_workflow(color, size=size, prefix="fault")
        if self.real:
            graph["1"]["inputs"]["batch_size"] = 2  # long enough on a CPU to be hit mid-way
        if not ids:
            return graph
        # Distinct node ids let an emulator fault target one of two concurrent jobs.
        rename = {old: f"{ids}{old}" for old in graph}
        return {rename[k]: {**v, "inputs": {n: ([rename[x[0]], x[1]] if isinstance(x, list) else x)
                                            for n, x in v["inputs"].items()}} for k, v in graph.items()}

    async def job(self, color: int, *, ids: str = "", images: list[dict[str, str]] | None = None,
                  extra: dict[str, Any] | None = None, job_fields: dict[str, Any] | None = None
                  ) -> asyncio.Task[dict[str, Any]]:
        job_input: dict[str, Any] = {"workflow": self.workflow(color, ids), **(extra or {})}
        if images:
            job_input["images"] = images
        job = {"id": f"fault-{color:06x}", "input": job_input, **(job_fields or {})}
        return asyncio.create_task(run_job(job, self.runtime, self.settings, lambda p: None))

    async def outcome(self, task: asyncio.Task[dict[str, Any]]) -> Outcome:
        try:
            result = await asyncio.wait_for(asyncio.shield(task), timeout=self.job_timeout)
        except asyncio.CancelledError:
            return Outcome(CANCELLED)
        except asyncio.TimeoutError:
            task.cancel()
            try:
                await asyncio.wait_for(task, timeout=10)
            except (asyncio.CancelledError, asyncio.TimeoutError):
                pass
            return Outcome(HANG)
        if "error" in result:
            return Outcome(json.loads(result["error"])["code"], result)
        return Outcome(OK, result)

    def record(self, kind: str, color: int, outcome: Outcome, allowed: set[str]) -> None:
        tally = self.tallies.setdefault(kind, Tally())
        tally.jobs += 1
        tally.outcomes[outcome.kind] += 1
        if outcome.kind == HANG:
            tally.hangs += 1
            tally.wrong.append(f"{color:06x}: hang")
            return
        if outcome.kind not in allowed:
            tally.wrong.append(f"{color:06x}: expected {sorted(allowed)}, got {outcome.describe()}")
            return
        if outcome.kind == OK:
            assert outcome.result is not None
            images = [o for o in outputs_with_data(outcome.result) if o.get("data")]
            pixels = [pixel_of_png(base64.b64decode(o["data"])) for o in images]
            if len(pixels) == (2 if self.real else 1) and all(same_pixel(p, color) for p in pixels):
                tally.right += 1
            elif any(same_pixel(p, other) for p in pixels for other in self.colors - {color}):
                tally.misdelivered += 1
                tally.wrong.append(f"{color:06x}: got another job's output")
            else:
                tally.lost += 1
                tally.wrong.append(f"{color:06x}: output lost ({len(pixels)} images)")
            return
        tally.right += 1

    # --- helpers --------------------------------------------------------------------------------
    def set_faults(self, **faults: Any) -> None:
        """Set the emulator's faults (all others off). A killed ComfyUI gets them again in ready()."""
        if not self.real:
            with contextlib.suppress(ComfyUnavailable):
                self.runtime.client._request("POST", "/__emulator__/faults",
                                             json={"node_delay": NODE_DELAY, "hang_on_node": None,
                                                   "drop_ws_after": None, "drop_final_message": False,
                                                   "oom_on_node": None, "error_on_node": None,
                                                   "fail_upload": False, **faults})

    async def ready(self) -> None:
        """Wait until ComfyUI (restarted after a kill) is back and idle before the next injection."""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                # Just after a kill the supervisor may not have seen the exit yet: retry until it has.
                await self.runtime.ready()
                self.set_faults()
                queue = await asyncio.to_thread(self.runtime.client.queue)
            except (ComfyUnavailable, WorkerError):
                await asyncio.sleep(0.2)
                continue
            if not queue.get("queue_running") and not queue.get("queue_pending"):
                return
            await asyncio.sleep(0.1)
        raise RuntimeError("ComfyUI did not come back idle")

    def moment(self) -> float:
        """A random moment inside a job's run (submission to completion)."""
        return self.rng.uniform(0.0, 0.8)

    def kill_later(self, delay: float) -> asyncio.Task[None]:
        assert self.runtime.process is not None
        pid = self.runtime.process.pid

        async def kill() -> None:
            await asyncio.sleep(delay)
            if pid is not None:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

        return asyncio.create_task(kill())

    # --- the kinds ------------------------------------------------------------------------------
    async def single(self, kind: str, allowed: set[str], before: Callable[[], None] | None = None,
                     during: Callable[[asyncio.Task[dict[str, Any]]], Awaitable[None]] | None = None,
                     images: bool = False, extra: dict[str, Any] | None = None,
                     job_fields: dict[str, Any] | None = None) -> None:
        await self.ready()
        if before:
            before()
        color = self.new_color()
        upload = [{"name": "in.png", "image": _png_b64((1, 2, 3))}] if images else None
        task = await self.job(color, images=upload, extra=extra, job_fields=job_fields)
        if during:
            await during(task)
        outcome = await self.outcome(task)
        self.set_faults()  # releases a hung node
        self.record(kind, color, outcome, allowed)

    async def run_kind(self, kind: str) -> None:
        self.tallies.setdefault(kind, Tally()).injected += 1
        if kind == "kill":
            killer: list[asyncio.Task[None]] = []

            async def kill(task: asyncio.Task[dict[str, Any]]) -> None:
                killer.append(self.kill_later(self.moment()))

            await self.single(kind, {OK, "COMFYUI_UNAVAILABLE"}, during=kill)
            await killer[0]
        elif kind == "ws_drop":
            if self.real:
                async def drop(task: asyncio.Task[dict[str, Any]]) -> None:
                    await asyncio.sleep(self.moment())
                    self.runtime.events.drop_connection()

                await self.single(kind, {OK}, during=drop)
            else:
                await self.single(kind, {OK}, before=lambda: self.set_faults(drop_ws_after=self.rng.randint(1, 10)))
        elif kind == "lost_final":
            await self.single(kind, {OK}, before=lambda: self.set_faults(drop_final_message=True))
        elif kind == "hang":
            await self.single(kind, {"TIMEOUT"}, before=lambda: self.set_faults(hang_on_node="ImageInvert"))
        elif kind == "oom":
            await self.single(kind, {"OUT_OF_MEMORY"}, before=lambda: self.set_faults(oom_on_node="ImageInvert"))
        elif kind == "node_error":
            await self.single(kind, {"EXECUTION_ERROR"},
                              before=lambda: self.set_faults(error_on_node="ImageInvert"))
        elif kind == "upload_fail":
            await self.single(kind, {"COMFYUI_UNAVAILABLE"}, before=lambda: self.set_faults(fail_upload=True),
                              images=True)
        elif kind == "timeout":
            # The job's own deadline at a random moment of its run: it ends in time or as TIMEOUT.
            await self.single(kind, {OK, "TIMEOUT"},
                              extra={"execution_config": {"timeout": round(self.rng.uniform(0.05, 0.8), 3)}})
        elif kind == "storage_fail":
            # Delivery to an S3 endpoint that refuses connections: retried, then UPLOAD_FAILED, nothing delivered.
            await self.single(kind, {"UPLOAD_FAILED"}, extra={"output_config": {"storage": {"provider": "s3"}}},
                              job_fields={"s3Config": {"accessId": "fault-suite", "accessSecret": "not-used-xyz",
                                                       "bucketName": "outputs",
                                                       "endpointUrl": f"http://127.0.0.1:{_closed_port()}"}})
        elif kind == "cancel":
            async def cancel(task: asyncio.Task[dict[str, Any]]) -> None:
                await asyncio.sleep(self.moment())
                task.cancel()

            await self.single(kind, {OK, CANCELLED}, during=cancel)
        elif kind.startswith("pair_"):
            await self.pair(kind)
        else:
            raise ValueError(f"unknown fault kind {kind!r}")

    async def pair(self, kind: str) -> None:
        """Two jobs at once, the fault aimed at the first; the second must be untouched."""
        await self.ready()
        a, b = self.new_color(), self.new_color()
        allowed_a, allowed_b = {OK}, {OK}
        if kind == "pair_error":
            self.set_faults(error_on_node="a2")
            allowed_a = {"EXECUTION_ERROR"}
        elif kind == "pair_ws_drop":
            self.set_faults(drop_ws_after=self.rng.randint(1, 12))
        task_a = await self.job(a, ids="a")
        task_b = await self.job(b, ids="b")
        extra: asyncio.Task[None] | None = None
        if kind == "pair_cancel":
            allowed_a = {OK, CANCELLED}

            async def cancel() -> None:
                await asyncio.sleep(self.moment())
                task_a.cancel()

            extra = asyncio.create_task(cancel())
        elif kind == "pair_kill":
            allowed_a = allowed_b = {OK, "COMFYUI_UNAVAILABLE"}
            extra = self.kill_later(self.moment())
        out_a, out_b = await asyncio.gather(self.outcome(task_a), self.outcome(task_b))
        if extra is not None:
            await extra
        self.set_faults()
        self.record(kind, a, out_a, allowed_a)
        self.record(kind, b, out_b, allowed_b)


def _closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _png_b64(rgb: tuple[int, int, int]) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), rgb).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def run_suite(tmp: Path, kinds: list[str], runs: int, job_timeout: float = 20.0, seed: int = 1,
              real: bool | None = None) -> tuple[dict[str, Tally], dict[str, int]]:
    """Run every kind `runs` times (interleaved); returns the tallies and the files left in ComfyUI's folders.
    `real`: against the ComfyUI of COMFYUI_DIR (default: when it is set) or the emulator."""
    real = real_comfyui() is not None if real is None else real
    # The worker's own stall watchdog must fire well inside the suite's outer timeout, which counts hangs.
    runtime, settings = boot_runtime(tmp, real=real, LOG_LEVEL="ERROR", COMFY_HISTORY_POLL_INTERVAL="1",
                                     COMFYUI_RESTART_BACKOFF_MAX="1", STALL_TIMEOUT=str(max(2.0, job_timeout / 4)),
                                     INTERRUPT_GRACE="2", ALLOW_PRIVATE_URLS="true", ALLOW_HTTP_URLS="true")
    if runtime.boot_error:
        raise RuntimeError(f"ComfyUI did not start: {runtime.boot_error}")
    suite = FaultSuite(runtime, settings, real=real, job_timeout=job_timeout, seed=seed)
    try:
        async def all_kinds() -> None:
            for _ in range(runs):
                for kind in kinds:
                    await suite.run_kind(kind)
            await suite.ready()

        asyncio.run(all_kinds())
        runtime.drain()  # per-job cleanup runs just after each result is returned
        left = {name: sum(1 for p in folder.rglob("*") if p.is_file()) if folder.exists() else 0
                for name, folder in runtime.folders.items()}
    finally:
        runtime.shutdown()
    return suite.tallies, left


def table(tallies: dict[str, Tally]) -> list[str]:
    lines = [f"{'fault':<13}{'injected':>9}{'jobs':>6}{'right':>7}{'hangs':>7}{'lost':>6}{'wrong job':>10}"
             "  outcomes"]
    total = Tally()
    for kind, t in tallies.items():
        lines.append(f"{kind:<13}{t.injected:>9}{t.jobs:>6}{t.right:>7}{t.hangs:>7}{t.lost:>6}{t.misdelivered:>10}"
                     "  " + " ".join(f"{k}={v}" for k, v in sorted(t.outcomes.items())))
        for name in ("injected", "jobs", "right", "hangs", "lost", "misdelivered"):
            setattr(total, name, getattr(total, name) + getattr(t, name))
    lines.append(f"{'total':<13}{total.injected:>9}{total.jobs:>6}{total.right:>7}{total.hangs:>7}"
                 f"{total.lost:>6}{total.misdelivered:>10}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="injections per kind (default 20)")
    parser.add_argument("--kinds", default="", help="comma-separated kinds (default: all for the target)")
    parser.add_argument("--job-timeout", type=float, default=20.0, help="outer timeout per job, seconds")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name in ("comfy_worker", "comfyui"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    kinds = [k for k in args.kinds.split(",") if k] or (REAL_KINDS if real_comfyui() else EMULATOR_KINDS)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="fault-suite-") as tmp:
        tallies, left = run_suite(Path(tmp), kinds, args.runs, args.job_timeout, args.seed)
    log.info("target: %s; %d runs per kind; outer job timeout %.0f s; %.0f s in all", target_name(), args.runs,
             args.job_timeout, time.monotonic() - started)
    for line in table(tallies):
        log.info("%s", line)
    log.info("files left in ComfyUI's folders afterwards: %s", ", ".join(f"{k}={v}" for k, v in left.items()))
    for kind, t in tallies.items():
        for line in t.wrong[:4]:
            log.info("  %s %s", kind, line)


if __name__ == "__main__":
    main()
