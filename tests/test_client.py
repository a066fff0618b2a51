"""The client as a new user runs it: a workflow file in, progress shown, outputs saved, failures explained,
Ctrl-C cancels. Against the worker under the runpod SDK's local server (emulated ComfyUI), and against a
stand-in for RunPod's endpoint API (for live progress, URL outputs and cancel, which the local server lacks)."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from PIL import Image

from comfy_run import describe_error, parse_error, parse_override
from comfy_run.spec import UsageError
from comfy_worker_dev.localserver import LocalWorkerServer
from comfy_worker_dev.emulator import FAULTS_ENV
from tests.httpserve import serve_http
from tests.workerkit import png_b64, worker_env

ROOT = Path(__file__).resolve().parents[1]


def client(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "comfy_run", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src"), **(env or {})})


def ui_workflow() -> dict:
    """LoadImage -> ImageInvert -> SaveImage as the web app saves it."""
    return {
        "last_node_id": 3, "last_link_id": 2, "version": 0.4,
        "nodes": [
            {"id": 1, "type": "LoadImage", "mode": 0, "inputs": [],
             "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [1]}, {"name": "MASK", "type": "MASK",
                                                                              "links": None}],
             "widgets_values": ["example.png", "image"]},
            {"id": 2, "type": "ImageInvert", "mode": 0, "inputs": [{"name": "image", "type": "IMAGE", "link": 1}],
             "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [2]}], "widgets_values": []},
            {"id": 3, "type": "SaveImage", "mode": 0, "inputs": [{"name": "images", "type": "IMAGE", "link": 2}],
             "outputs": [], "widgets_values": ["ComfyUI"]},
        ],
        "links": [[1, 1, 0, 2, 0, "IMAGE"], [2, 2, 0, 3, 0, "IMAGE"]],
    }


@pytest.fixture(scope="module")
def local_worker(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("client-worker")
    env = worker_env(tmp, LOG_LEVEL="INFO", **{FAULTS_ENV: json.dumps({"error_on_node": "ImageSharpen"})})
    with LocalWorkerServer(env) as server:
        yield server


def test_ui_workflow_with_image_and_override_is_run_and_saved(local_worker, tmp_path):
    wf = tmp_path / "invert.json"
    wf.write_text(json.dumps(ui_workflow()))
    photo = tmp_path / "cat.png"
    Image.new("RGB", (40, 30), (250, 10, 10)).save(photo)
    out = tmp_path / "out"
    result = client(str(wf), "--local", local_worker.url, "--image", f"example.png={photo}",
                    "--set", "3.filename_prefix=inverted", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "submitted to local server" in result.stderr
    assert "100.0%" in result.stderr and "[####" in result.stderr
    [saved] = sorted(out.iterdir())
    assert saved.name.startswith("inverted") and saved.suffix == ".png"
    with Image.open(saved) as img:
        assert img.size == (40, 30) and img.convert("RGB").getpixel((0, 0)) == (5, 245, 245)
    assert f"saved {saved}" in result.stderr and "COMPLETED: 1 output(s)" in result.stderr


def test_job_file_is_sent_whole_without_flags(local_worker, tmp_path):
    """test_input.json as a new user runs it: the image it carries goes with the workflow."""
    out = tmp_path / "out"
    result = client("test_input.json", "--local", local_worker.url, "--out", str(out))
    assert result.returncode == 0, result.stderr
    [saved] = sorted(out.iterdir())
    with Image.open(saved) as img:
        assert img.size == (128, 128)


def test_recorded_request_example_runs_as_is(local_worker, tmp_path):
    """docs/examples' requests are job files too: the dry run's execution_config travels with it."""
    out = tmp_path / "out"
    result = client("docs/examples/completed-dry-run.request.json", "--local", local_worker.url, "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "dry-run.json").read_text())["preflight"]["ok"] is True


def _job_file(tmp_path: Path, body: object) -> Path:
    path = tmp_path / "job.json"
    path.write_text(json.dumps(body))
    return path


def test_job_file_fields_with_flags_over_them(tmp_path):
    from comfy_run import JobSpec

    photo = tmp_path / "cat.png"
    photo.write_bytes(b"new")
    path = _job_file(tmp_path, {"s3Config": {"accessId": "a", "accessSecret": "s"}, "input": {
        "workflow": {"1": {"class_type": "X", "inputs": {}}},
        "images": [{"name": "a.png", "image": "QQ=="}, {"name": "b.png", "image": "Qg=="}],
        "inputs": {"1.text": "file", "1.steps": 4}, "comfy_org_api_key": "k",
        "output_config": {"format": "webp"}, "execution_config": {"timeout": 30}}})
    spec = JobSpec.from_files(path, images={"b.png": photo}, overrides=["1.text=flag"])
    spec.set_execution(dry_run=True)
    body = spec.job_input()
    assert body["images"] == [{"name": "a.png", "image": "QQ=="}, {"name": "b.png", "image": "bmV3"}]
    assert body["inputs"] == {"1.text": "flag", "1.steps": 4}
    assert body["execution_config"] == {"timeout": 30, "dry_run": True}
    assert body["output_config"] == {"format": "webp"} and body["comfy_org_api_key"] == "k"
    assert spec.request == {"s3Config": {"accessId": "a", "accessSecret": "s"}}


def test_job_file_forms(tmp_path):
    from comfy_run import JobSpec

    graph = {"1": {"class_type": "X", "inputs": {}}}
    as_string = JobSpec.from_files(_job_file(tmp_path, {"input": json.dumps({"workflow": graph})}))
    assert as_string.job_input() == {"workflow": graph}
    bare_input = JobSpec.from_files(_job_file(tmp_path, {"workflow": graph, "inputs": [{"1.a": 1}, {"1.a": 2}]}),
                                    overrides=["1.b=3"])
    assert bare_input.job_input()["inputs"] == [{"1.a": 1, "1.b": 3}, {"1.a": 2, "1.b": 3}]
    assert JobSpec.from_files(_job_file(tmp_path, graph)).job_input() == {"workflow": graph}
    with pytest.raises(UsageError, match="holds no `workflow`"):
        JobSpec.from_files(_job_file(tmp_path, {"input": {"images": []}}))


def test_failing_workflow_shows_code_node_and_message(local_worker, tmp_path):
    wf = tmp_path / "sharpen.json"
    wf.write_text(json.dumps({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
        "2": {"class_type": "ImageSharpen", "inputs": {"image": ["1", 0], "sharpen_radius": 1, "sigma": 1.0,
                                                       "alpha": 1.0}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "x"}}}))
    result = client(str(wf), "--local", local_worker.url, "--out", str(tmp_path / "out"))
    assert result.returncode == 1
    assert "FAILED: EXECUTION_ERROR: node 2 (ImageSharpen) failed" in result.stderr
    assert "where: node 2 (ImageSharpen)" in result.stderr
    assert "error: RuntimeError: Emulated failure in node 2 (ImageSharpen)" in result.stderr
    assert "what to do: Read `details.node_id`" in result.stderr
    assert not (tmp_path / "out").exists()


def test_invalid_override_names_the_field(local_worker, tmp_path):
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps({"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8,
                                                                           "batch_size": 1, "color": 0}},
                              "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0]}}}))
    result = client(str(wf), "--local", local_worker.url, "--set", "9.text=hello")
    assert result.returncode == 1
    assert "FAILED: INVALID_INPUT" in result.stderr and "9.text" in result.stderr


def test_bad_arguments_exit_2(tmp_path):
    result = client(str(tmp_path / "missing.json"), "--local", "http://127.0.0.1:9")
    assert result.returncode == 2 and "cannot read the workflow file" in result.stderr
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps({"1": {"class_type": "EmptyImage", "inputs": {}}}))
    result = client(str(wf), "--endpoint", "abc", env={"RUNPOD_API_KEY": ""})
    assert result.returncode == 2 and "RUNPOD_API_KEY is not set" in result.stderr


# --- a stand-in for RunPod's endpoint API ----------------------------------------------------------


class FakeEndpoint:
    """Answers /v2/<id>/run, /status, /cancel like RunPod, with scripted progress; records every call."""

    def __init__(self, statuses: list[dict], *, repeat_last: bool = False,
                 streams: list[dict] | None = None) -> None:
        self.statuses = statuses
        self.streams = streams or []
        self.repeat_last = repeat_last
        self.calls: list[tuple[str, str, str | None]] = []
        self.bodies: list[dict] = []
        self.files: dict[str, bytes] = {}
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _handle(self, method: str) -> None:
                fake.calls.append((method, self.path, self.headers.get("Authorization")))
                if self.path.startswith("/files/"):
                    return self._send(200, fake.files[self.path[len("/files/"):]], "image/png")
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    fake.bodies.append(json.loads(self.rfile.read(length)))
                parts = self.path.strip("/").split("/")
                if self.headers.get("Authorization") != "Bearer test-key":
                    return self._send(401, b"{}")
                if parts[-1] == "run":
                    return self._send(200, json.dumps({"id": "job-1", "status": "IN_QUEUE"}).encode())
                if parts[-2] == "status":
                    answer = fake.statuses[0] if (len(fake.statuses) == 1 and fake.repeat_last) \
                        else fake.statuses.pop(0)
                    return self._send(200, json.dumps({"id": "job-1", **answer}).encode())
                if parts[-2] == "stream":
                    return self._send(200, json.dumps({"id": "job-1", **fake.streams.pop(0)}).encode())
                if parts[-2] == "cancel":
                    return self._send(200, json.dumps({"id": "job-1", "status": "CANCELLED"}).encode())
                self._send(404, b"{}")

            def do_GET(self):
                self._handle("GET")

            def do_POST(self):
                self._handle("POST")

        self._handler = Handler
        self._servers = contextlib.ExitStack()
        self.url = ""

    def __enter__(self) -> FakeEndpoint:
        server = self._servers.enter_context(serve_http(self._handler))
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        return self

    def __exit__(self, *exc) -> None:
        self._servers.close()

    def env(self) -> dict[str, str]:
        return {"RUNPOD_API_KEY": "test-key", "RUNPOD_ENDPOINT_BASE_URL": f"{self.url}/v2"}


def _progress(node: str, class_type: str, step: int | None, percent: float) -> dict:
    return {"status": "IN_PROGRESS", "output": {
        "stage": "running", "prompt_id": "p", "node": node, "class_type": class_type, "step": step,
        "max_steps": 20 if step is not None else None, "nodes_done": 1, "nodes_total": 3, "percent": percent}}


def test_endpoint_progress_url_and_text_outputs(tmp_path):
    png = io.BytesIO()
    Image.new("RGB", (4, 4), (1, 2, 3)).save(png, "PNG")
    result_output = {"prompt_id": "p", "images": [], "timings": {"total": 1.0}, "warnings": [], "outputs": [
        {"node_id": "9", "kind": "image", "key": "images", "filename": "fox_00001_.png", "type": "output",
         "mime_type": "image/png", "size": 10, "data": png_b64((4, 4))},
        {"node_id": "10", "kind": "image", "key": "images", "filename": "../../escape.png", "type": "output",
         "mime_type": "image/png", "size": 10, "url": "FILES/remote.png"},
        {"node_id": "11", "kind": "text", "key": "text", "mime_type": "text/plain", "size": 5, "text": "hello"}]}
    statuses = [{"status": "IN_QUEUE"}, _progress("3", "KSampler", 5, 30.0), _progress("3", "KSampler", 15, 60.0),
                {"status": "COMPLETED", "output": result_output}]
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps({"input": {"workflow": {"1": {"class_type": "EmptyImage", "inputs": {}}}}}))
    with FakeEndpoint(statuses) as fake:
        fake.files["remote.png"] = png.getvalue()
        result_output["outputs"][1]["url"] = f"{fake.url}/files/remote.png"
        result = client(str(wf), "--endpoint", "ep1", "--set", "6.text=a fox", "--set", "3.steps=30",
                        "--timeout", "120", "--poll", "0.05", "--out", str(tmp_path / "out"), env=fake.env())
    assert result.returncode == 0, result.stderr
    assert "waiting for a worker" in result.stderr
    assert "30.0% node 3 (KSampler) step 5/20" in result.stderr
    assert "60.0% node 3 (KSampler) step 15/20" in result.stderr
    [body] = fake.bodies
    assert body["input"]["inputs"] == {"6.text": "a fox", "3.steps": 30}
    assert body["policy"] == {"executionTimeout": 120000}
    assert ("POST", "/v2/ep1/run", "Bearer test-key") in fake.calls
    saved = {p.name: p for p in (tmp_path / "out").iterdir()}
    assert set(saved) == {"fox_00001_.png", "escape.png", "11_text_2.txt"}
    assert saved["escape.png"].read_bytes() == png.getvalue()
    assert saved["11_text_2.txt"].read_text() == "hello"
    assert not (tmp_path / "escape.png").exists()


def test_ctrl_c_cancels_the_job(tmp_path):
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps({"1": {"class_type": "EmptyImage", "inputs": {}}}))
    with FakeEndpoint([_progress("3", "KSampler", 1, 5.0)], repeat_last=True) as fake:
        # A shell runs background jobs with SIGINT ignored, and children inherit that; a terminal's Ctrl-C
        # reaches a process whose SIGINT is at its default, so restore it for the client.
        proc = subprocess.Popen([sys.executable, "-m", "comfy_run", str(wf), "--endpoint", "ep1",
                                 "--poll", "0.05"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src"), **fake.env()},
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        try:
            deadline = time.monotonic() + 60
            while not any("/status/" in path for _, path, _ in fake.calls):
                assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read() if proc.poll() else ""
                time.sleep(0.05)
            proc.send_signal(signal.SIGINT)
            _, stderr = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 130, stderr
    assert ("POST", "/v2/ep1/cancel/job-1", "Bearer test-key") in fake.calls
    assert "CANCELLED" in stderr


# --- pieces ---------------------------------------------------------------------------------------------


def test_overrides_keep_json_types():
    assert parse_override("6.text=a cat") == ("6.text", "a cat")
    assert parse_override("3.steps=30") == ("3.steps", 30)
    assert parse_override("Positive Prompt.text=a.b=c") == ("Positive Prompt.text", "a.b=c")
    assert parse_override("3.cfg=7.5") == ("3.cfg", 7.5)
    with pytest.raises(UsageError, match="node id or title"):
        parse_override("steps=30")


def test_error_formats():
    sdk = json.dumps({"error_type": "<class 'ValueError'>", "error_message": "boom", "error_traceback": "…"})
    assert parse_error(sdk)["code"] == "INTERNAL_ERROR"
    assert parse_error("Job ID not found") == {"code": "UNKNOWN", "message": "Job ID not found",
                                               "retryable": False, "details": {}}
    lines = describe_error(parse_error(json.dumps({
        "code": "INVALID_INPUT", "message": "invalid job input", "retryable": False,
        "details": {"errors": [{"field": "images[0].name", "problem": "must be a plain file name"}]}})))
    assert "  field images[0].name: must be a plain file name" in lines
    assert any(line.startswith("  what to do: Fix the fields") for line in lines)


def test_saved_output_base64_is_decoded(tmp_path):
    from comfy_run import Outcome

    data = base64.b64decode(png_b64((3, 3)))
    outcome = Outcome("j", "COMPLETED", {"outputs": [{"node_id": "1", "kind": "image", "filename": "a.png",
                                                      "data": base64.b64encode(data).decode()}]})
    [path] = outcome.save(tmp_path)
    assert path == tmp_path / "a.png" and path.read_bytes() == data


def test_models_by_url_from_the_command_line(tmp_path):
    from comfy_run import JobSpec
    from comfy_run.display import ProgressDisplay
    from comfy_run.spec import parse_model

    assert parse_model("https://hf.co/o/r/resolve/main/a.safetensors:loras") == {
        "url": "https://hf.co/o/r/resolve/main/a.safetensors", "folder": "loras"}
    assert parse_model("https://models.example:8443/a.safetensors") == {"url": "https://models.example:8443/a.safetensors"}
    assert parse_model("s3://bucket/k.safetensors:checkpoints")["folder"] == "checkpoints"
    with pytest.raises(UsageError, match="--model"):
        parse_model("ftp://x/a.safetensors")
    path = _job_file(tmp_path, {"input": {"workflow": {"1": {"class_type": "X", "inputs": {}}},
                                          "models": [{"url": "https://hf.co/b.safetensors", "folder": "vae"}]}})
    body = JobSpec.from_files(path, models=["https://hf.co/a.safetensors:loras"]).job_input()
    assert body["models"] == [{"url": "https://hf.co/b.safetensors", "folder": "vae"},
                              {"url": "https://hf.co/a.safetensors", "folder": "loras"}]
    line = ProgressDisplay(io.StringIO()).line_for("IN_PROGRESS", {
        "stage": "fetching_models", "models": 1, "models_done": 0, "bytes_done": 2 ** 20,
        "bytes_total": 4 * 2 ** 20, "percent": 25.0})
    assert "25.0% fetching 1 model file(s): 1.0 of 4.0 MiB" in line
    lines = describe_error({"code": "MODEL_FETCH_FAILED", "message": "1 model file(s) could not be fetched",
                            "retryable": False, "details": {"failures": [{
                                "field": "models[0]", "url": "https://example.com/x.safetensors", "folder": "loras",
                                "reason": "host_not_allowed", "message": "not allowed", "retryable": False}]}})
    assert "  models[0] (https://example.com/x.safetensors): host_not_allowed: not allowed" in lines


def _preview_uri() -> str:
    jpeg = io.BytesIO()
    Image.new("RGB", (8, 8), (9, 9, 9)).save(jpeg, "JPEG")
    return "data:image/jpeg;base64," + base64.b64encode(jpeg.getvalue()).decode()


def test_stream_shows_progress_saves_previews_and_each_output_as_it_comes(tmp_path):
    png = io.BytesIO()
    Image.new("RGB", (4, 4), (1, 2, 3)).save(png, "PNG")
    early = {"node_id": "9", "kind": "image", "key": "images", "filename": "fox_00001_.png", "type": "output",
             "mime_type": "image/png", "size": 10, "url": "FILES/fox.png", "storage": "s3"}
    inline = {"node_id": "12", "kind": "text", "key": "text", "mime_type": "text/plain", "size": 5,
              "text": "hello"}
    result = {"prompt_id": "p", "outputs": [early, inline], "images": [{"filename": "fox_00001_.png",
              "type": "s3_url", "data": "FILES/fox.png"}], "timings": {"total": 1.0}, "warnings": []}
    progress = _progress("3", "KSampler", 4, 40.0)["output"]
    streams = [
        {"status": "IN_QUEUE", "stream": []},
        {"status": "IN_PROGRESS", "stream": [
            {"output": {"event": "progress", "job_id": "job-1", "seq": 1, "progress": progress}},
            {"output": {"event": "preview", "job_id": "job-1", "seq": 2, "prompt_id": "p", "node": "3",
                        "class_type": "KSampler", "step": 4, "max_steps": 20, "image": _preview_uri(),
                        "width": 8, "height": 8}}]},
        {"status": "IN_PROGRESS", "stream": [{"output": {"event": "output", "job_id": "job-1", "seq": 3,
                                                         "output": early}}]},
        {"status": "COMPLETED", "stream": [{"output": result}]},
    ]
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps({"input": {"workflow": {"1": {"class_type": "EmptyImage", "inputs": {}}}}}))
    with FakeEndpoint([], streams=streams) as fake:
        fake.files["fox.png"] = png.getvalue()
        early["url"] = f"{fake.url}/files/fox.png"
        answer = client(str(wf), "--endpoint", "ep1", "--stream", "--poll", "0.05", "--out", str(tmp_path / "out"),
                        env=fake.env())
    assert answer.returncode == 0, answer.stderr
    assert "40.0% node 3 (KSampler) step 4/20" in answer.stderr
    assert not [c for c in fake.calls if "/status/" in c[1]]  # everything came through /stream
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["12_text_1.txt", "fox_00001_.png", "previews"]
    assert [p.name for p in (out / "previews").iterdir()] == ["0002-node3-step4.jpg"]
    assert (out / "fox_00001_.png").read_bytes() == png.getvalue()
    # The early output was downloaded once, when its event came, not again from the result.
    assert len([c for c in fake.calls if c[1] == "/files/fox.png"]) == 1
    assert "as it was delivered" in answer.stderr


def test_stream_from_an_endpoint_not_in_stream_mode_falls_back_to_status(tmp_path):
    result = {"prompt_id": "p", "outputs": [{"node_id": "12", "kind": "text", "key": "text",
              "mime_type": "text/plain", "size": 2, "text": "hi"}], "images": [], "timings": {}, "warnings": []}
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps({"1": {"class_type": "EmptyImage", "inputs": {}}}))
    with FakeEndpoint([{"status": "COMPLETED", "output": result}],
                      streams=[{"status": "COMPLETED", "stream": []}]) as fake:
        answer = client(str(wf), "--endpoint", "ep1", "--stream", "--poll", "0.05", "--out", str(tmp_path / "o"),
                        env=fake.env())
    assert answer.returncode == 0, answer.stderr
    assert (tmp_path / "o" / "12_text_0.txt").read_text() == "hi"


def test_stream_against_the_local_server_in_stream_mode(tmp_path_factory, tmp_path):
    tmp = tmp_path_factory.mktemp("client-stream-worker")
    env = worker_env(tmp, LOG_LEVEL="INFO", STREAM_MODE="true")
    wf = tmp_path / "job.json"
    wf.write_text(json.dumps({"input": {"workflow": {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 255}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "local"}}}}}))
    with LocalWorkerServer(env) as server:
        answer = client(str(wf), "--local", server.url, "--stream", "--out", str(tmp_path / "out"))
        failing = tmp_path / "bad.json"
        failing.write_text(json.dumps({"1": {"class_type": "NoSuchNode", "inputs": {}}}))
        failed = client(str(failing), "--local", server.url, "--stream", "--out", str(tmp_path / "out2"))
    assert answer.returncode == 0, answer.stderr
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["local_00001_.png"]
    assert failed.returncode == 1 and "INVALID_WORKFLOW" in failed.stderr
