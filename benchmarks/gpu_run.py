"""Every GPU figure of docs/performance.md from one run: cold starts, text-to-image through the worker and
through a bare ComfyUI client, free_memory_after, out-of-memory recovery and cancellation.

    python benchmarks/gpu_run.py --comfyui-dir DIR --comfyui-python PY --out result.json
    python benchmarks/gpu_run.py ... --cpu --size 64 --steps 2 --runs 3      # a small run without a GPU

The checkpoint is an SD 1.5 model of random weights with real names and shapes (benchmarks/gpu/), written
by ComfyUI's interpreter into a models folder given to ComfyUI with --extra-model-paths-config. Nothing is
downloaded. A figure that was not measured is written as null with the reason; none is ever estimated.
The JSON goes to --out and a Markdown section for docs/performance.md to standard output.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HERE = ROOT / "benchmarks" / "gpu"
sys.path.insert(0, str(ROOT / "src"))

log = logging.getLogger("gpu_run")

CHECKPOINT = "sd15-random.safetensors"
CANCEL_TARGET_S = 1.0

# name -> (label in the Markdown table, unit)
FIGURES: dict[str, tuple[str, str]] = {
    "checkpoint_write_s": ("Writing the random SD 1.5 checkpoint", "s"),
    "cold_start_comfyui_s": ("Cold start, ComfyUI alone (process start to /system_stats 200)", "s"),
    "cold_start_worker_s": ("Cold start, worker (process start to create_worker() ready)", "s"),
    "runpod_import_s": ("Importing the runpod SDK (handler.py adds this to the worker's cold start)", "s"),
    "first_job_s": ("First text-to-image job (loads the checkpoint)", "s"),
    "job_worker_s": ("Text-to-image job through the worker (run_job), median", "s"),
    "job_direct_s": ("Same job through a bare ComfyUI client, median", "s"),
    "worker_overhead_s": ("Worker overhead per job (median difference)", "s"),
    "worker_overhead_ratio": ("Worker / bare client time", "x"),
    "vram_free_before_free_memory": ("VRAM free before a free_memory_after job ends (system_stats vram_free)", "GiB"),
    "vram_free_after_free_memory": ("VRAM free after it (vram_free)", "GiB"),
    "torch_vram_free_before_free_memory": ("torch_vram_free before", "GiB"),
    "torch_vram_free_after_free_memory": ("torch_vram_free after", "GiB"),
    "oom_error_code": ("Error code of a job that runs out of GPU memory", ""),
    "oom_job_s": ("Time until the out-of-memory job failed (both attempts)", "s"),
    "oom_retried_after_free": ("It was run once more after ComfyUI freed its memory (details.retried)", ""),
    "job_after_oom_ok": ("Next job after the out-of-memory one succeeded", ""),
    "cancel_to_queue_empty_s": (f"Cancel mid-sampling until ComfyUI's queue is empty (target < {CANCEL_TARGET_S:.0f} s)",
                                "s"),
}
GPU_ONLY = {"vram_free_before_free_memory", "vram_free_after_free_memory", "torch_vram_free_before_free_memory",
            "torch_vram_free_after_free_memory", "oom_error_code", "oom_job_s", "oom_retried_after_free",
            "job_after_oom_ok"}
NOT_ON_CPU = "not measured on CPU"


# --- results ---------------------------------------------------------------------------------------
class Results:
    """Figures as measured, each a value with its samples, or null with the reason it is missing."""

    def __init__(self, meta: dict[str, Any]) -> None:
        self.meta = meta
        self.figures: dict[str, dict[str, Any]] = {}
        self.notes: list[str] = []

    def set(self, name: str, value: Any, samples: list[float] | None = None, note: str | None = None) -> None:
        entry: dict[str, Any] = {"value": value, "unit": FIGURES[name][1], "reason": None}
        if samples is not None:
            entry["samples"] = [round(s, 4) for s in samples]
        if note:
            entry["note"] = note
        self.figures[name] = entry

    def missing(self, name: str, reason: str) -> None:
        if name not in self.figures:
            self.figures[name] = {"value": None, "unit": FIGURES[name][1], "reason": reason}

    def to_json(self) -> dict[str, Any]:
        figures = {name: self.figures.get(name, {"value": None, "unit": unit, "reason": "not reached"})
                   for name, (_label, unit) in FIGURES.items()}
        return {"schema": 1, **self.meta, "figures": figures, "notes": self.notes}


def median(samples: list[float]) -> float:
    return round(statistics.median(samples), 4)


def render_markdown(result: dict[str, Any]) -> str:
    """The section for docs/performance.md: what was measured where, then one row per figure."""
    m = result.get("machine", {})
    p = result.get("parameters", {})
    device = m.get("device") or "unknown device"
    kind = "GPU" if m.get("device_type") == "cuda" else "CPU"
    lines = [
        f"### Measured on {device} ({kind}), {result.get('date', 'unknown date')}",
        "",
        f"ComfyUI {m.get('comfyui_version') or 'unknown'}, PyTorch {m.get('pytorch_version') or 'unknown'}, "
        f"Python {m.get('python') or 'unknown'}; {p.get('size')}x{p.get('size')} pixels, {p.get('steps')} steps, "
        f"{p.get('runs')} timed runs per path, {p.get('cold_runs')} cold starts each; SD 1.5 checkpoint of random "
        f"weights (real shapes). Produced by `benchmarks/gpu_run.py`.",
        "",
        "| Figure | Value | Note |",
        "|---|---|---|",
    ]
    for name, (label, unit) in FIGURES.items():
        entry = result.get("figures", {}).get(name) or {"value": None, "reason": "not reached"}
        lines.append(f"| {label} | {_format(entry.get('value'), unit)} | {_note(entry)} |")
    for note in result.get("notes", []):
        lines.append("")
        lines.append(f"- {note}")
    return "\n".join(lines) + "\n"


def _format(value: Any, unit: str) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        text = f"{value:.3f}" if unit == "s" else f"{value:.2f}"
        return f"{text} {unit}".strip() if unit != "x" else f"{text}×"
    return f"{value} {unit}".strip()


def _note(entry: dict[str, Any]) -> str:
    if entry.get("value") is None:
        return str(entry.get("reason") or "not measured").replace("|", "/")
    parts = []
    if entry.get("samples"):
        parts.append("samples: " + ", ".join(f"{s:g}" for s in entry["samples"]))
    if entry.get("note"):
        parts.append(str(entry["note"]))
    return "; ".join(parts).replace("|", "/")


# --- workflows -------------------------------------------------------------------------------------
def txt2img_workflow(size: int, steps: int, seed: int, batch: int = 1, prefix: str = "gpu_run") -> dict[str, Any]:
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CHECKPOINT}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a lighthouse on a cliff at dawn", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": batch}},
        "3": {"class_type": "KSampler", "inputs": {
            "seed": seed, "steps": steps, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0,
            "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": prefix, "images": ["8", 0]}},
    }


# --- environment -----------------------------------------------------------------------------------
class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.started = time.monotonic()
        self.work = Path(args.work_dir or tempfile.mkdtemp(prefix="gpu_run-"))
        self.work.mkdir(parents=True, exist_ok=True)
        self.models = Path(args.models_dir) if args.models_dir else self.work / "models"
        self.extra_paths = self.work / "extra_model_paths.yaml"
        self.comfy_args = (["--cpu"] if args.cpu else []) + list(args.comfy_arg)

    def left(self) -> float:
        return self.args.budget_seconds - (time.monotonic() - self.started)

    def folders(self, name: str) -> dict[str, Path]:
        base = self.work / name
        return {"input": base / "input", "output": base / "output", "temp": base}

    def comfy_env(self, name: str) -> dict[str, str]:
        """The worker's environment for a ComfyUI whose folders live under the work folder."""
        from comfy_worker_dev.localserver import free_port

        f = self.folders(name)
        return {
            "COMFYUI_DIR": str(self.args.comfyui_dir), "COMFYUI_PYTHON": self.args.comfyui_python,
            "COMFYUI_PORT": str(free_port()), "COMFYUI_INPUT_DIR": str(f["input"]),
            "COMFYUI_OUTPUT_DIR": str(f["output"]), "COMFYUI_TEMP_DIR": str(f["temp"]),
            "COMFYUI_EXTRA_MODEL_PATHS": str(self.extra_paths), "COMFYUI_EXTRA_ARGS": " ".join(self.comfy_args),
            "COMFYUI_START_TIMEOUT": "300", "COMFYUI_RESTART": "false",
            "NETWORK_VOLUME_PATH": str(self.work / "no-volume"), "MODELS_MANIFEST": str(self.work / "no-models.yaml"),
            "LOG_LEVEL": "WARNING",
        }


def make_checkpoint(bench: Bench, results: Results) -> None:
    path = bench.models / "checkpoints" / CHECKPOINT
    if path.is_file():
        results.missing("checkpoint_write_s", f"reused {path}")
    else:
        proc = subprocess.run([bench.args.comfyui_python, str(HERE / "make_checkpoint.py"), str(path)],
                              capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            raise RuntimeError(f"writing the checkpoint failed: {proc.stderr[-2000:]}")
        info = json.loads(proc.stdout.strip().splitlines()[-1])
        results.set("checkpoint_write_s", info["seconds"], note=f"{info['parameters']:,} parameters, "
                    f"{info['bytes'] / 2**30:.2f} GiB")
    bench.extra_paths.write_text(json.dumps({"gpu_run": {"base_path": str(bench.models),
                                                         "checkpoints": "checkpoints"}}))
    results.meta["parameters"]["checkpoint_bytes"] = path.stat().st_size


# --- b. cold starts --------------------------------------------------------------------------------
def cold_start_comfyui(bench: Bench) -> float:
    import requests

    env = bench.comfy_env("cold-comfyui")
    f = bench.folders("cold-comfyui")
    cmd = [bench.args.comfyui_python, "main.py", "--listen", "127.0.0.1", "--port", env["COMFYUI_PORT"],
           "--disable-auto-launch", "--input-directory", str(f["input"]), "--output-directory", str(f["output"]),
           "--temp-directory", str(f["temp"]), "--extra-model-paths-config", str(bench.extra_paths),
           *bench.comfy_args]
    url = f"http://127.0.0.1:{env['COMFYUI_PORT']}/system_stats"
    started = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=bench.args.comfyui_dir, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        while time.monotonic() - started < 300:
            if proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with code {proc.returncode} before it answered")
            try:
                if requests.get(url, timeout=2).status_code == 200:
                    return time.monotonic() - started
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise TimeoutError("ComfyUI did not answer within 300 s")
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def cold_start_worker(bench: Bench) -> float:
    env = {**os.environ, **bench.comfy_env("cold-worker"), "PYTHONUNBUFFERED": "1"}
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, str(HERE / "worker_cold.py")], env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        report = None
        while report is None:  # the worker's own log lines (WARNING and up) share its standard output
            line = proc.stdout.readline() if proc.stdout else ""
            if not line:
                raise RuntimeError(f"the worker exited with code {proc.wait()} before it was ready")
            if line.startswith("{"):
                report = json.loads(line)
        seconds = time.monotonic() - started
        if not report["ready"]:
            raise RuntimeError(f"the worker booted without a ready ComfyUI: {report['boot_error']}")
        return seconds
    finally:
        if proc.stdin:
            proc.stdin.close()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def runpod_import(bench: Bench) -> float:
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", "import runpod"], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError("the runpod SDK is not installed in this interpreter")
    return time.monotonic() - started - python_start(bench)


def python_start(bench: Bench) -> float:
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", "pass"], check=True, timeout=60)
    return time.monotonic() - started


# --- c. jobs ---------------------------------------------------------------------------------------
class DirectClient:
    """The least a caller needs to run a prompt on ComfyUI: websocket, /prompt, /history, the file."""

    def __init__(self, base_url: str, output_dir: Path) -> None:
        self.base_url = base_url
        self.output_dir = output_dir
        self.client_id = uuid.uuid4().hex

    def run(self, workflow: dict[str, Any], timeout: float = 600.0) -> list[bytes]:
        import requests
        import websocket

        ws = websocket.create_connection(f"{self.base_url.replace('http', 'ws', 1)}/ws?clientId={self.client_id}",
                                         timeout=timeout)
        try:
            resp = requests.post(f"{self.base_url}/prompt", json={"prompt": workflow, "client_id": self.client_id},
                                 timeout=30)
            resp.raise_for_status()
            prompt_id = resp.json()["prompt_id"]
            while True:
                message = ws.recv()
                if not isinstance(message, str):
                    continue
                event = json.loads(message)
                data = event.get("data") or {}
                if data.get("prompt_id") != prompt_id:
                    continue
                if event.get("type") == "execution_error":
                    raise RuntimeError(f"ComfyUI failed: {data.get('exception_message')}")
                if event.get("type") == "executing" and data.get("node") is None:
                    break
        finally:
            ws.close()
        history = requests.get(f"{self.base_url}/history/{prompt_id}", timeout=30).json()[prompt_id]
        files = []
        for output in history["outputs"].values():
            for image in output.get("images", []):
                path = self.output_dir / image.get("subfolder", "") / image["filename"]
                files.append(base64.b64encode(path.read_bytes()))
                path.unlink()
        requests.post(f"{self.base_url}/history", json={"delete": [prompt_id]}, timeout=30)
        return files


def system_stats(runtime: Any) -> dict[str, Any]:
    return runtime.client.system_stats(timeout=10)


def run_worker_job(runtime: Any, settings: Any, job_input: dict[str, Any], job_id: str,
                   sink: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    from comfy_worker.job import run_job

    return asyncio.run(run_job({"id": job_id, "input": job_input}, runtime, settings, sink or (lambda p: None)))


def check_images(result: dict[str, Any]) -> None:
    if "error" in result:
        raise RuntimeError(f"the job failed: {result['error'][:1000]}")
    if not result.get("output", result).get("images") and not result.get("output", result).get("outputs"):
        raise RuntimeError(f"the job returned no image: {json.dumps(result)[:500]}")


def jobs(bench: Bench, results: Results, runtime: Any, settings: Any) -> None:
    a = bench.args
    seed = iter(range(1000, 100000))  # a new seed each job, or ComfyUI returns the cached sample
    started = time.monotonic()
    check_images(run_worker_job(runtime, settings, {"workflow": txt2img_workflow(a.size, a.steps, next(seed))},
                                "first"))
    results.set("first_job_s", round(time.monotonic() - started, 4))
    direct = DirectClient(settings.base_url, settings.output_dir)
    worker_times: list[float] = []
    direct_times: list[float] = []
    for i in range(a.runs):  # alternated, so drift in the machine touches both paths alike
        if bench.left() < 30:
            results.notes.append(f"job timing stopped after {i} runs: budget reached")
            break
        started = time.monotonic()
        check_images(run_worker_job(runtime, settings, {"workflow": txt2img_workflow(a.size, a.steps, next(seed))},
                                    f"timed-{i}"))
        worker_times.append(time.monotonic() - started)
        started = time.monotonic()
        if not direct.run(txt2img_workflow(a.size, a.steps, next(seed), prefix="direct")):
            raise RuntimeError("the bare client got no image")
        direct_times.append(time.monotonic() - started)
    if not worker_times:
        return
    w, d = median(worker_times), median(direct_times)
    results.set("job_worker_s", w, worker_times)
    results.set("job_direct_s", d, direct_times, note="websocket + /prompt + /history + file read and base64")
    results.set("worker_overhead_s", round(w - d, 4))
    results.set("worker_overhead_ratio", round(w / d, 3))


def free_memory(bench: Bench, results: Results, runtime: Any, settings: Any) -> None:
    a = bench.args
    job = {"workflow": txt2img_workflow(a.size, a.steps, 424242), "execution_config": {"free_memory_after": True}}
    captured: dict[str, Any] = {}

    def sink(payload: dict[str, Any]) -> None:
        # The last progress of the sampler: the model is on the GPU, the job has not freed anything yet.
        if payload.get("class_type") in {"KSampler", "VAEDecode", "SaveImage"}:
            captured["before"] = system_stats(runtime)["devices"][0]

    before_job = system_stats(runtime)["devices"][0]
    check_images(run_worker_job(runtime, settings, job, "free-memory", sink))
    before = captured.get("before", before_job)
    # ComfyUI applies /free between prompts, on its own loop: wait for it to show, a few seconds at most.
    after = system_stats(runtime)["devices"][0]
    deadline = time.monotonic() + 5
    while after["vram_free"] <= before["vram_free"] and time.monotonic() < deadline:
        time.sleep(0.25)
        after = system_stats(runtime)["devices"][0]
    gib = 2 ** 30
    note = "read during the job" if "before" in captured else "read before the job"
    results.set("vram_free_before_free_memory", round(before["vram_free"] / gib, 3), note=note)
    results.set("vram_free_after_free_memory", round(after["vram_free"] / gib, 3),
                note=f"of {after['vram_total'] / gib:.2f} GiB")
    results.set("torch_vram_free_before_free_memory", round(before["torch_vram_free"] / gib, 3))
    results.set("torch_vram_free_after_free_memory", round(after["torch_vram_free"] / gib, 3))


def out_of_memory(bench: Bench, results: Results, runtime: Any, settings: Any) -> None:
    a = bench.args
    job = {"workflow": txt2img_workflow(a.oom_size, a.steps, 7, batch=a.oom_batch),
           "execution_config": {"timeout": a.oom_timeout}}
    started = time.monotonic()
    result = run_worker_job(runtime, settings, job, "oom")
    seconds = round(time.monotonic() - started, 4)
    if "error" not in result:
        results.missing("oom_error_code", f"batch {a.oom_batch} at {a.oom_size}px did not run out of memory")
        results.missing("oom_job_s", "no out-of-memory happened")
        results.missing("oom_retried_after_free", "no out-of-memory happened")
    else:
        error = json.loads(result["error"])
        results.set("oom_error_code", error.get("code"), note=str(error.get("message", ""))[:160])
        results.set("oom_job_s", seconds)
        details = error.get("details") or {}
        results.set("oom_retried_after_free", bool(details.get("retried") and details.get("memory_freed")))
    after = run_worker_job(runtime, settings, {"workflow": txt2img_workflow(a.size, a.steps, 8)}, "after-oom")
    results.set("job_after_oom_ok", "error" not in after,
                note=None if "error" not in after else after["error"][:160])


def cancel(bench: Bench, results: Results, runtime: Any, settings: Any) -> None:
    a = bench.args
    job = {"id": "cancel", "input": {"workflow": txt2img_workflow(a.size, a.cancel_steps, 99)}}
    seen_step = asyncio.Event()

    async def scenario() -> tuple[float, bool]:
        from comfy_worker.job import run_job

        loop = asyncio.get_running_loop()

        def sink(payload: dict[str, Any]) -> None:
            if payload.get("class_type") == "KSampler" and (payload.get("step") or 0) >= 1:
                loop.call_soon_threadsafe(seen_step.set)

        task = asyncio.create_task(run_job(job, runtime, settings, sink))
        waiter = asyncio.create_task(seen_step.wait())
        await asyncio.wait({task, waiter}, timeout=a.oom_timeout, return_when=asyncio.FIRST_COMPLETED)
        if not seen_step.is_set():
            waiter.cancel()
            raise RuntimeError("the sampler finished or never reported a step before it could be cancelled")
        cancelled_at = time.monotonic()
        task.cancel()
        cancelled = False
        try:
            await task
        except asyncio.CancelledError:
            cancelled = True
        while True:
            queue = await asyncio.to_thread(runtime.client.queue)
            if not queue.get("queue_running") and not queue.get("queue_pending"):
                return time.monotonic() - cancelled_at, cancelled
            if time.monotonic() - cancelled_at > 60:
                raise RuntimeError("ComfyUI's queue was not empty 60 s after the cancel")
            await asyncio.sleep(0.01)

    seconds, cancelled = asyncio.run(scenario())
    results.set("cancel_to_queue_empty_s", round(seconds, 4),
                note=f"{a.cancel_steps}-step job; run_job {'raised CancelledError' if cancelled else 'returned'}")


# --- the run ---------------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> dict[str, Any]:
    bench = Bench(args)
    results = Results({
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
        "machine": {"device_type": "cpu" if args.cpu else "cuda", "host_cpus": os.cpu_count(),
                    "host_platform": platform.platform()},
        "parameters": {"size": args.size, "steps": args.steps, "runs": args.runs, "cold_runs": args.cold_runs,
                       "cpu": args.cpu, "budget_seconds": args.budget_seconds, "cancel_steps": args.cancel_steps,
                       "oom_batch": args.oom_batch, "oom_size": args.oom_size, "comfyui_args": bench.comfy_args},
    })
    if args.cpu:
        for name in GPU_ONLY:
            results.missing(name, NOT_ON_CPU)

    def step(names: list[str], needed: float, fn: Callable[[], None]) -> None:
        if bench.left() < needed:
            for name in names:
                results.missing(name, f"stopped early: less than {needed:.0f} s of the {args.budget_seconds:.0f} s "
                                      "budget left")
            return
        try:
            fn()
        except Exception as exc:  # one part failing must not cost the figures of the others
            log.exception("%s failed", names[0])
            results.notes.append(f"{names[0]}: {type(exc).__name__}: {str(exc)[:300]}")
            for name in names:
                results.missing(name, f"failed: {type(exc).__name__}: {str(exc)[:300]}")

    step(["checkpoint_write_s"], 60, lambda: make_checkpoint(bench, results))
    if not bench.extra_paths.exists():
        results.notes.append("no checkpoint: nothing else could run")
        return results.to_json()

    def cold(name: str, fn: Callable[[Bench], float]) -> Callable[[], None]:
        def measure() -> None:
            samples = []
            for _ in range(args.cold_runs):
                if samples and bench.left() < 60:
                    results.notes.append(f"{name}: {len(samples)} of {args.cold_runs} runs, budget reached")
                    break
                samples.append(fn(bench))
            results.set(name, median(samples), samples)
        return measure

    step(["cold_start_comfyui_s"], 60, cold("cold_start_comfyui_s", cold_start_comfyui))
    step(["cold_start_worker_s"], 60, cold("cold_start_worker_s", cold_start_worker))
    step(["runpod_import_s"], 20, lambda: results.set("runpod_import_s", round(runpod_import(bench), 4),
                                                      note="import time beyond a bare interpreter start"))

    from comfy_worker.comfy import connect
    from comfy_worker.settings import Settings

    settings = Settings.from_env(bench.comfy_env("jobs"))
    runtime = connect(settings)
    try:
        if not runtime.boot():
            raise RuntimeError(f"ComfyUI did not start for the job runs: {runtime.boot_error}")
        stats = system_stats(runtime)
        device = stats["devices"][0] if stats.get("devices") else {}
        results.meta["machine"].update({
            "device": device.get("name"), "vram_total_gib": round(device.get("vram_total", 0) / 2 ** 30, 2),
            "comfyui_version": stats["system"].get("comfyui_version"),
            "pytorch_version": stats["system"].get("pytorch_version"),
            "python": stats["system"].get("python_version", "").split(" ")[0]})
        step(["first_job_s", "job_worker_s", "job_direct_s", "worker_overhead_s", "worker_overhead_ratio"], 60,
             lambda: jobs(bench, results, runtime, settings))
        if not args.cpu:
            step(["vram_free_before_free_memory", "vram_free_after_free_memory",
                  "torch_vram_free_before_free_memory", "torch_vram_free_after_free_memory"], 30,
                 lambda: free_memory(bench, results, runtime, settings))
            step(["oom_error_code", "oom_job_s", "oom_retried_after_free", "job_after_oom_ok"], 60,
                 lambda: out_of_memory(bench, results, runtime, settings))
        step(["cancel_to_queue_empty_s"], 30, lambda: cancel(bench, results, runtime, settings))
    finally:
        runtime.shutdown()
    return results.to_json()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comfyui-dir", type=Path, default=os.environ.get("COMFYUI_DIR"),
                        help="ComfyUI checkout (default: $COMFYUI_DIR)")
    parser.add_argument("--comfyui-python", default=os.environ.get("COMFYUI_PYTHON", sys.executable),
                        help="ComfyUI's interpreter (default: $COMFYUI_PYTHON, else this one)")
    parser.add_argument("--out", type=Path, required=True, help="JSON file for the figures")
    parser.add_argument("--markdown", type=Path, help="also write the Markdown section to this file")
    parser.add_argument("--size", type=int, default=512, help="image width and height")
    parser.add_argument("--steps", type=int, default=20, help="sampler steps of the timed jobs")
    parser.add_argument("--runs", type=int, default=5, help="timed jobs per path (worker, bare client)")
    parser.add_argument("--cold-runs", type=int, default=3, help="cold starts per kind")
    parser.add_argument("--cancel-steps", type=int, default=200, help="steps of the job that is cancelled")
    parser.add_argument("--oom-batch", type=int, default=4096, help="batch size of the out-of-memory job")
    parser.add_argument("--oom-size", type=int, default=1024, help="width and height of the out-of-memory job")
    parser.add_argument("--oom-timeout", type=float, default=120.0, help="time limit of the out-of-memory job")
    parser.add_argument("--cpu", action="store_true", help="run ComfyUI with --cpu; skips the VRAM and OOM parts")
    parser.add_argument("--comfy-arg", action="append", default=[], help="one more ComfyUI flag (repeatable)")
    parser.add_argument("--budget-seconds", type=float, default=480.0,
                        help="stop starting new parts after this long and write what was measured")
    parser.add_argument("--work-dir", help="folder for ComfyUI's files (default: a new temporary folder)")
    parser.add_argument("--models-dir", help="models folder; a checkpoint already there is reused")
    args = parser.parse_args(argv)
    if args.comfyui_dir is None:
        parser.error("--comfyui-dir or COMFYUI_DIR is required")
    return args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        stream=sys.stderr)
    args = parse_args(argv)
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    markdown = render_markdown(result)
    if args.markdown:
        args.markdown.write_text(markdown)
    sys.stdout.write(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
