"""The JSON examples of docs/api.md, produced by runs of the worker; each file says what its ComfyUI was.

Every example job is sent through the runpod SDK's local API server (`handler.py --rp_serve_api`). Its
ComfyUI is a real one where the case can happen there (`COMFYUI_DIR`, and `COMFYUI_PYTHON`, started with
`--cpu`), and the ComfyUI emulator for the failures that only an injected fault produces on demand
(`FAULTED`). The progress example comes from the same pipeline with its progress sink. What changes from
run to run (ids, timings, base64, hashes, temporary paths) is replaced by stable placeholders, so the files
in docs/examples/ only change when the worker's answers change.

Each file holds the body as the API sends it plus one key of its own, `recorded_with`: "ComfyUI <version>
(commit <sha>), CPU", or "emulator (...)" with the fault that was injected. It is not part of the body:
comfy_worker_dev.reference.read_example takes it out (for the docs and their test), and the client sends
only a job file's `input` and RunPod's own fields.

Without a real ComfyUI every example runs on the emulator. The emulator answers these cases as the real
ComfyUI does, so an example recorded from the real one stays as it is while the emulator's answer equals
it; one whose answer changed is rewritten from the emulator and then says so in its `recorded_with`.

    COMFYUI_DIR=... COMFYUI_PYTHON=... PYTHONPATH=src:. python -m tests.apiexamples --write
    PYTHONPATH=src:. python -m tests.apiexamples --write     # emulator only: see above
    PYTHONPATH=src:. python -m tests.apiexamples             # report stale files, exit 1 if any
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from comfy_worker_dev.emulator import FAULTS_ENV
from comfy_worker_dev.localserver import LocalWorkerServer
from comfy_worker_dev.reference import RECORDED_WITH, read_example
from tests.workerkit import boot_runtime, png_b64, real_comfyui, run, worker_env

log = logging.getLogger("tests.apiexamples")

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES_DIR = ROOT / "docs" / "examples"

PROMPT_ID = "8684e646-416d-48fa-b98e-55c2fff4900d"
JOB_ID = "test-0b1c2d3e-4f5a-4c2a-9e7d-a8d3c1e05f6b"
SHA256 = "ace27ebf" + "0" * 56
B64_SHORT = "iVBORw0KGgo…"
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_JOB_ID = re.compile(r"test-" + _UUID.pattern)
_TOKEN = re.compile(r"cw[0-9a-f]{6,}")

EMULATOR = "emulator (src/comfy_worker_dev/emulator, built from captures of ComfyUI 0.33)"
ENV = {"NODE_DENYLIST": "SaveAnimatedWEBP"}
PROGRESS = "in-progress.response"
# Stream mode runs in-process on the emulator, whose latent previews are shaped as ComfyUI 0.33 sends them.
STREAM = "stream"
STREAM_NOTE = f"{EMULATOR}, the worker in stream mode (STREAM_MODE), latent previews as ComfyUI 0.33 sends them"
# The progress example's job: its blur takes seconds on a CPU, so that a report falls between its nodes
# (reports are at most every half second). The emulator's nodes each sleep PROGRESS_DELAY seconds instead.
PROGRESS_JOB = {"workflow": {
    "1": {"class_type": "EmptyImage",
          "inputs": {"width": 1536, "height": 1536, "batch_size": 1, "color": 0x3366CC}},
    "2": {"class_type": "ImageBlur", "inputs": {"image": ["1", 0], "blur_radius": 15, "sigma": 5.0}},
    "3": {"class_type": "ImageInvert", "inputs": {"image": ["2", 0]}},
    "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "blurred"}},
}}
PROGRESS_DELAY = 0.6
PROGRESS_STAND_IN = f"{EMULATOR}, injected fault node_delay={PROGRESS_DELAY}: each node takes {PROGRESS_DELAY} s"


@dataclass(frozen=True)
class Fault:
    """A fault injected into the emulator (a field of comfy_worker_dev.emulator.Faults) for one example."""

    field: str
    node: str  # a class type that no other example sends to the emulator
    effect: str

    def note(self) -> str:
        return f"{EMULATOR}, injected fault {self.field}={self.node}: {self.effect}"


# The failures a real ComfyUI does not give on demand. Every other example runs on the real ComfyUI.
FAULTED = {
    "failed-EXECUTION_ERROR": Fault("error_on_node", "ImageSharpen", "the node raises RuntimeError"),
    "failed-OUT_OF_MEMORY": Fault("oom_on_node", "ImageBlur", "the node raises torch.OutOfMemoryError, also "
                                  "when the prompt runs again after memory is freed"),
}


def _invert(image_name: str = "example.png") -> dict[str, Any]:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": image_name}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "inverted"}},
    }


def _through(class_type: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
        "2": {"class_type": class_type, "inputs": {"image": ["1", 0], **(extra or {})}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "out"}},
    }


def requests_() -> dict[str, dict[str, Any]]:
    """name -> job input. `completed` and `failed-*` names pick the docs section each example belongs to."""
    image = png_b64((64, 64), (200, 40, 40))
    return {
        "completed": {"workflow": _invert(), "images": [{"name": "example.png", "image": image}]},
        "completed-dry-run": {"workflow": _invert(), "images": [{"name": "example.png", "image": image}],
                              "execution_config": {"dry_run": True}},
        # workflows/invert: the example deployment of the repository, by name.
        "completed-named": {"workflow_id": "invert", "params": {"width": 96, "height": 64, "method": "bilinear"}},
        "completed-catalogue": {"list_workflows": True},
        "failed-INVALID_INPUT": {"workflow": _invert(), "images": [{"name": "../example.png", "image": image}],
                                 "seed": 5},
        "failed-INVALID_WORKFLOW": {"workflow": {
            "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
            "2": {"class_type": "FancyUpscaler", "inputs": {"image": ["1", 0]}},
            "3": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}}}},
        "failed-MISSING_MODELS": {"workflow": {
            "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd_xl_base_1.0.safetensors"}},
            "2": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1}},
            "3": {"class_type": "KSampler", "inputs": {
                "model": ["1", 0], "positive": ["4", 0], "negative": ["4", 0], "latent_image": ["2", 0],
                "seed": 1, "steps": 20, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal",
                "denoise": 1.0}},
            "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["1", 1]}},
            "5": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["1", 2]}},
            "6": {"class_type": "SaveImage", "inputs": {"images": ["5", 0], "filename_prefix": "cat"}}}},
        "failed-POLICY_VIOLATION": {"workflow": {
            "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
            "2": {"class_type": "SaveAnimatedWEBP", "inputs": {
                "images": ["1", 0], "filename_prefix": "anim", "fps": 6.0, "lossless": False, "quality": 80,
                "method": "default"}}}},
        "failed-MODEL_FETCH_FAILED": {"workflow": {
            "1": {"class_type": "CreateHookLora", "inputs": {"lora_name": "style.safetensors", "strength_model": 1.0,
                                                             "strength_clip": 1.0}},
            "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}},
            "models": [{"url": "https://example.com/loras/style.safetensors", "folder": "loras"}]},
        "failed-EXECUTION_ERROR": {"workflow": _through("ImageSharpen", {
            "sharpen_radius": 1, "sigma": 1.0, "alpha": 1.0})},
        "failed-OUT_OF_MEMORY": {"workflow": _through("ImageBlur", {"blur_radius": 1, "sigma": 1.0})},
    }


def normalise(value: Any, key: str | None = None) -> Any:
    """Replace what differs between runs with stable placeholders, keeping every type."""
    if isinstance(value, dict):
        if key == "timings":
            return {k: 0.01 for k in value}
        return {k: normalise(v, k) for k, v in value.items()}
    if isinstance(value, list):
        if key in {"traceback", "log_tail"}:
            return ["…"]
        return [normalise(v) for v in value]
    if isinstance(value, str):
        if key == "error":
            try:
                inner = json.loads(value)
            except ValueError:
                return value
            return json.dumps(normalise(inner), ensure_ascii=False)
        if key == "data":
            return B64_SHORT
        if key == "image" and len(value) > 64:
            # A preview's data URI keeps its header.
            return value.split(",", 1)[0] + ",/9j/4AAQ…" if value.startswith("data:") else B64_SHORT
        if key == "sha256":
            return SHA256
        if key in {"id", "job_id"} and _UUID.search(value):  # job ids, not a deployed workflow's id
            return JOB_ID
        value = _JOB_ID.sub(JOB_ID, value)
        value = _UUID.sub(PROMPT_ID, value)
        return _TOKEN.sub("cw0000000000", value)
    if key == "size" and isinstance(value, int):
        return 1024
    return value


@dataclass(frozen=True)
class Example:
    """One example file: the body as the API sends it, and what the worker's ComfyUI was."""

    body: dict[str, Any]
    recorded_with: str
    # Run on the emulator only because no real ComfyUI was at hand: it does not replace a recording from
    # the real ComfyUI whose answer is the same.
    stand_in: bool = False

    def file(self) -> dict[str, Any]:
        return {RECORDED_WITH: self.recorded_with, **self.body}


def recorded() -> dict[str, Example]:
    """The example files as they are in docs/examples/."""
    found = {}
    for path in sorted(EXAMPLES_DIR.glob("*.json")):
        body, note = read_example(path)
        found[path.name.removesuffix(".json")] = Example(body, note or "")
    return found


def matches(fresh: Example, old: Example | None, name: str) -> bool:
    """Whether a recorded example still holds: the same body (for the progress report, which report falls
    mid-run depends on timing: the same fields), and the same note unless the fresh one is a stand-in."""
    if old is None:
        return False
    if name == PROGRESS:
        def shape(body: dict[str, Any]) -> dict[str, Any]:
            return {**body, "output": sorted(body["output"])}

        same_body = shape(fresh.body) == shape(old.body)
    elif name == STREAM + ".response":
        # How many progress and preview chunks a run yields depends on timing; their kinds, the outputs and
        # the result must not change.
        def kinds(body: dict[str, Any]) -> tuple[set[str], list[Any]]:
            chunks = body["output"]
            outputs = [{k: v for k, v in c.items() if k != "seq"} for c in chunks if c.get("event") == "output"]
            return {c.get("event", "result") for c in chunks}, outputs  # `seq` counts the chunks before it

        same_body = kinds(fresh.body) == kinds(old.body) and fresh.body["output"][-1] == old.body["output"][-1]
    else:
        same_body = fresh.body == old.body
    return same_body and (fresh.stand_in or fresh.recorded_with == old.recorded_with)


# ------------------------------------------------------------------------------------------------------
# The ComfyUIs


def _git(comfy_dir: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(comfy_dir), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else None


def comfyui_commit(comfy_dir: Path) -> str | None:
    """The upstream commit a ComfyUI checkout runs. scripts/rehearse-image.sh may check out a stand-in
    commit (the pinned one less the files its source lacks) whose message starts with the pinned commit."""
    subject = _git(comfy_dir, "log", "-1", "--format=%s") or ""
    pinned = re.match(r"([0-9a-f]{40}) without files the source lacks", subject)
    return pinned.group(1) if pinned else _git(comfy_dir, "rev-parse", "HEAD")


def comfyui_note(url: str, comfy_dir: Path) -> str:
    """`ComfyUI 0.33.0 (commit 783545f689a0), CPU`: the version the running ComfyUI reports, its checkout."""
    system = requests.get(f"{url}/system_stats", timeout=10).json().get("system") or {}
    commit = comfyui_commit(comfy_dir)
    return (f"ComfyUI {system.get('comfyui_version') or '(version unknown)'}"
            + (f" (commit {commit[:12]})" if commit else "") + ", CPU")


@dataclass(frozen=True)
class _Target:
    server: LocalWorkerServer
    comfyui_url: str
    note: str


@contextmanager
def _target(tmp: Path, *, real: bool) -> Iterator[_Target]:
    """The local API server with the real ComfyUI, or with the emulator and every fault of FAULTED armed
    (each names a node type that only its example uses)."""
    faults = {} if real else {FAULTS_ENV: json.dumps({f.field: f.node for f in FAULTED.values()})}
    env = worker_env(tmp, real=real, **ENV, LOG_LEVEL="INFO", **faults)
    url = f"http://127.0.0.1:{env['COMFYUI_PORT']}"
    with open(tmp / "worker.log", "wb") as log_file:
        try:
            server = LocalWorkerServer(env, log_file=log_file).start()
        except RuntimeError:
            log.error("the worker did not start; its log ends:\n%s", (tmp / "worker.log").read_text()[-4000:])
            raise
        try:
            yield _Target(server, url, comfyui_note(url, Path(env["COMFYUI_DIR"])) if real else EMULATOR)
        finally:
            server.stop()


def _progress(tmp: Path, comfyui_url: str | None) -> dict[str, Any]:
    """A progress report sent while the job runs: from a worker attached to the real ComfyUI at comfyui_url,
    else from one on an emulator whose nodes each take PROGRESS_DELAY seconds."""
    if comfyui_url is not None:
        runtime, settings = boot_runtime(tmp, COMFYUI_URL=comfyui_url)
    else:
        runtime, settings = boot_runtime(tmp, faults={"node_delay": PROGRESS_DELAY})
    try:
        sent: list[dict[str, Any]] = []
        result = run(runtime, settings, PROGRESS_JOB, job_id=JOB_ID, progress=sent)
        assert "error" not in result, result
    finally:
        runtime.shutdown()
    # The middle one of the reports sent between nodes (the last one comes as the prompt ends).
    between = [p for p in sent if p["stage"] == "running" and p["node"] is not None and p["percent"] < 99]
    example = between[len(between) // 2] if between else sent[-1]
    return normalise({"id": JOB_ID, "status": "IN_PROGRESS", "output": example})


def stream_request() -> dict[str, Any]:
    """The stream-mode example: the captured tiny SD 1.5 graph, 4 steps, previews on."""
    from tests.captures import capture

    graph = json.loads(json.dumps(capture("sd_txt2img_with_previews_request.json")["prompt"]))
    return {"workflow": graph, "output_config": {"previews": {"max_per_second": 2}}}


def _stream(tmp: Path) -> list[dict[str, Any]]:
    """The chunks of a stream-mode job (what /runsync returns as `output` on an endpoint in stream mode)."""
    import asyncio

    from comfy_worker.app import WorkerApp, _job_handler

    runtime, settings = boot_runtime(tmp)
    try:
        (settings.comfyui_dir / "models" / "checkpoints" / "tiny-sd15.safetensors").write_bytes(b"emulated")
        streaming = settings.model_copy(update={"stream_mode": True})
        handler = _job_handler(WorkerApp(None, streaming, runtime), streaming, runtime)

        async def chunks() -> list[dict[str, Any]]:
            return [c async for c in handler({"id": JOB_ID, "input": stream_request()})]

        found = asyncio.run(chunks())
        runtime.drain()
        assert "error" not in found[-1], found[-1]
        return found
    finally:
        runtime.shutdown()


def generate(use_real: bool | None = None) -> dict[str, Example]:
    """Run every example: name -> Example (request bodies and status responses). Every example but those of
    FAULTED runs on the real ComfyUI when there is one (COMFYUI_DIR; `use_real` says whether to require it
    or to leave it out), else on the emulator as a stand-in."""
    real = real_comfyui() is not None if use_real is None else use_real
    if real and real_comfyui() is None:
        raise RuntimeError("no real ComfyUI: set COMFYUI_DIR (and COMFYUI_PYTHON)")
    examples: dict[str, Example] = {}
    with tempfile.TemporaryDirectory(prefix="api-examples-") as tmp_name, ExitStack() as stack:
        tmp = Path(tmp_name)
        for part in ("emulator", "real", "progress"):
            (tmp / part).mkdir()
        emulator = stack.enter_context(_target(tmp / "emulator", real=False))
        comfyui = stack.enter_context(_target(tmp / "real", real=True)) if real else None
        for name, job_input in requests_().items():
            fault = FAULTED.get(name)
            target = comfyui if comfyui is not None and fault is None else emulator
            note = fault.note() if fault else target.note
            response = target.server.runsync(job_input)
            for kind, body in (("request", {"input": job_input}), ("response", response)):
                examples[f"{name}.{kind}"] = Example(normalise(body), note, stand_in=not fault and not real)
        if comfyui is not None:
            examples[PROGRESS] = Example(_progress(tmp / "progress", comfyui.comfyui_url), comfyui.note)
        else:
            examples[PROGRESS] = Example(_progress(tmp / "progress", None), PROGRESS_STAND_IN, stand_in=True)
        (tmp / "stream").mkdir()
        chunks = _stream(tmp / "stream")
    examples[STREAM + ".request"] = Example(normalise({"input": stream_request()}), STREAM_NOTE)
    examples[STREAM + ".response"] = Example(
        normalise({"id": JOB_ID, "status": "COMPLETED", "output": chunks}), STREAM_NOTE)
    return examples


def render(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False) + "\n"


def outdated(examples: dict[str, Example], *, refresh: bool = False) -> list[Path]:
    """Files that no longer hold (see `matches`); with `refresh`, also those a recording from the real
    ComfyUI words differently (another report mid-run, another ComfyUI version)."""
    old = recorded()
    out = []
    for name, example in examples.items():
        path = EXAMPLES_DIR / f"{name}.json"
        if not matches(example, old.get(name), name) or \
                refresh and not example.stand_in and path.read_text() != render(example.file()):
            out.append(path)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help="rewrite docs/examples/*.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if real_comfyui() is None:
        log.warning("no COMFYUI_DIR: the emulator stands in for the real ComfyUI; an example it answers the "
                    "same keeps its recording, another one gets recorded_with %r", EMULATOR)
    examples = generate()
    paths = outdated(examples, refresh=args.write)
    if args.write:
        EXAMPLES_DIR.mkdir(parents=True, exist_ok=True)
        for path in paths:
            path.write_text(render(examples[path.name.removesuffix(".json")].file()))
    for path in paths:
        log.info("%s: %s", "updated" if args.write else "stale", path.relative_to(ROOT))
    return 1 if paths and not args.write else 0


if __name__ == "__main__":
    sys.exit(main())
