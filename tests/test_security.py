"""A caller cannot reach beyond its own job: each request of the security review, sent as an attacker would,
refused with a clear code or made harmless, and nothing written, read or left outside the job's folders.

Storage and outbound connections are in test_security_storage.py (against SeaweedFS and a resolver that
maps names to loopback). Here: limits, CPU, files, disclosure and what ComfyUI's process is given, through
the worker against the emulator and, with COMFYUI_DIR, the real ComfyUI.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings as hsettings
from hypothesis import strategies as st
from PIL import Image

from comfy_worker.comfy.fake import FakeComfy
from comfy_worker.comfy.isolation import comfyui_environment, comfyui_identity
from comfy_worker.errors import ErrorCode, WorkerError
from comfy_worker.job import run_job
from comfy_worker.models.download import DownloadError, DownloadOptions, ensure_models
from comfy_worker.models.manifest import ModelEntry
from comfy_worker.redaction import for_caller, scrub_text
from comfy_worker.settings import Settings
from comfy_worker.workflow.convert import dynamic_prompt, strip_comments

from .captures import capture
from .workerkit import boot_runtime, empty_image_workflow, error_of, files_under, png_b64, real_comfyui, run

CATALOGUE = capture("object_info.json")
TARGETS = ["emulator"] + (["real"] if real_comfyui() else [])
NODE_FILE = Path(__file__).parent / "fixtures" / "custom_nodes" / "environment_report.py"
SECRETS = {"BUCKET_ACCESS_KEY_ID": "AKIA-WORKER-OWN-KEY", "BUCKET_SECRET_ACCESS_KEY": "worker-secret-access-key",
           "GDRIVE_CREDENTIALS": '{"private_key": "-----BEGIN drive key"}', "HF_TOKEN": "hf_worker_secret_token",
           "CIVITAI_TOKEN": "civitai-worker-secret", "RUNPOD_AI_API_KEY": "rp-worker-secret-key",
           "COMFY_ORG_API_KEY": "comfy-org-worker-key"}


def fake_run(job_input: Any, tmp_path: Path, **env: str) -> tuple[dict[str, Any], FakeComfy]:
    comfy = FakeComfy(CATALOGUE, root=tmp_path / "comfyui")
    result = asyncio.run(run_job({"id": "job-1", "input": job_input}, comfy, Settings.from_env(env), lambda p: None))
    return result, comfy


# ----------------------------------------------------------------------------------------- no unbounded CPU


def test_unclosed_comments_are_text_and_linear() -> None:
    """`"/*a" * 40000` took 28 s in a backtracking regex; an unclosed `/*` stays text, as in the web app."""
    hostile = "/*a" * 40000
    assert strip_comments(hostile) == hostile
    assert dynamic_prompt(hostile, random.Random(1)) == hostile
    assert strip_comments("a /* x */ b // c\nd /* e") == "a  b \nd /* e"


@hsettings(max_examples=300, deadline=None)
@given(st.text(alphabet="/*a\n{}|", max_size=60))
def test_comment_stripping_matches_the_web_apps_regex(text: str) -> None:
    assert strip_comments(text) == re.sub(r"/\*[\s\S]*?\*/|//.*", "", text)


def test_a_key_of_dots_is_refused_at_once(tmp_path: Path) -> None:
    result, comfy = fake_run({"workflow": empty_image_workflow(), "inputs": {"." * 200_000: "x"}}, tmp_path)
    err = error_of(result)
    assert err["code"] == "INVALID_INPUT" and "512 characters" in err["message"]
    assert not comfy.submitted


@pytest.mark.parametrize(("env", "job", "field"), [
    ({"MAX_REQUEST_BYTES": "2048"}, {"workflow": empty_image_workflow(), "inputs": {"2.filename_prefix": "x" * 4000}},
     "input"),
    ({"MAX_TEXT_CHARS": "1024"}, {"workflow": {**empty_image_workflow(),
                                               "3": {"class_type": "PrimitiveString", "inputs": {"value": "y" * 2000}}}},
     "workflow"),
    ({"MAX_WORKFLOW_BYTES": "1024"}, {"workflow": {str(i): {"class_type": "EmptyImage", "inputs": {"width": 8}}
                                                   for i in range(100)}}, "workflow"),
])
def test_size_caps_name_the_field_and_the_setting(tmp_path: Path, env: dict[str, str], job: dict[str, Any],
                                                  field: str) -> None:
    result, comfy = fake_run(job, tmp_path, **env)
    err = error_of(result)
    assert err["code"] == "INVALID_INPUT" and err["details"]["errors"][0]["field"] == field
    assert next(iter(env)) in err["message"]
    assert not comfy.submitted


# ----------------------------------------------------------------------------------------- limits and media


@pytest.mark.parametrize("width", ["512", {"__value__": 512}])
def test_numbers_as_strings_or_wrapped_are_limited(tmp_path: Path, width: Any) -> None:
    workflow = empty_image_workflow(height=512)
    workflow["1"]["inputs"]["width"] = width
    for job in ({"workflow": workflow},
                {"workflow": empty_image_workflow(height=512), "inputs": {"1.width": width}}):
        result, comfy = fake_run(job, tmp_path, MAX_PIXELS="65536")
        err = error_of(result)
        assert err["code"] == "POLICY_VIOLATION" and "MAX_PIXELS" in json.dumps(err["details"]), err
        assert not comfy.submitted


def test_sizes_through_links_are_bounded(tmp_path: Path) -> None:
    """EmptyImage 64² → ImageScaleBy ×8 → RepeatImageBatch 4 made 4 × 512² under MAX_PIXELS=65536."""
    workflow = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
        "2": {"class_type": "ImageScaleBy", "inputs": {"image": ["1", 0], "upscale_method": "nearest-exact",
                                                       "scale_by": 8.0}},
        "3": {"class_type": "RepeatImageBatch", "inputs": {"image": ["2", 0], "amount": 4}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "x"}},
    }
    result, comfy = fake_run({"workflow": workflow}, tmp_path, MAX_PIXELS="65536")
    err = error_of(result)
    assert err["code"] == "POLICY_VIOLATION" and "MAX_PIXELS" in json.dumps(err["details"])
    assert not comfy.submitted


def test_every_staged_media_counts(tmp_path: Path) -> None:
    """Eight data URIs through `inputs` were staged under MAX_INPUT_IMAGES=2; a batch of 4 × 8 staged 32."""
    data_uri = "data:image/png;base64," + png_b64((8, 8))
    workflow = {str(i): {"class_type": "LoadImage", "inputs": {"image": "x.png"}} for i in range(1, 9)}
    workflow["9"] = {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}}
    inputs = {f"{i}.image": data_uri for i in range(1, 9)}
    for job in ({"workflow": workflow, "inputs": inputs},
                {"workflow": workflow, "inputs": [{"1.image": data_uri} for _ in range(4)]}):
        result, comfy = fake_run(job, tmp_path, MAX_INPUT_IMAGES="2")
        err = error_of(result)
        assert err["code"] == "INVALID_INPUT" and "MAX_INPUT_IMAGES" in err["message"], err
        assert not comfy.submitted and not files_under(tmp_path / "comfyui" / "input")


@pytest.mark.parametrize("text", ["https://example.com is my favourite site", "s3://private/hr/passport.png"])
def test_a_text_that_looks_like_a_url_stays_text(tmp_path: Path, text: str) -> None:
    """A URL given for a text input was fetched (INPUT_FETCH_FAILED), an s3:// text read with the operator's
    credentials; only inputs that take media are fetched."""
    workflow = {**empty_image_workflow(), "3": {"class_type": "PrimitiveString", "inputs": {"value": ""}}}
    result, comfy = fake_run({"workflow": workflow, "inputs": {"3.value": text}}, tmp_path)
    assert "error" not in result, result
    [(_, graph, _)] = comfy.submitted
    assert graph["3"]["inputs"]["value"] == text
    assert not files_under(tmp_path / "comfyui" / "input")


# ----------------------------------------------------------------------------------------- files


@pytest.fixture(scope="module", params=TARGETS)
def comfy(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("security")
    runtime, settings = boot_runtime(tmp, real=request.param == "real")
    yield runtime, settings, tmp
    runtime.shutdown()


def test_an_annotation_cannot_hide_a_path_escape(comfy) -> None:
    runtime, settings, tmp = comfy
    workflow = empty_image_workflow(prefix="a [/../../../planted]")
    err = error_of(run(runtime, settings, {"workflow": workflow}))
    assert err["code"] == "POLICY_VIOLATION" and "PATH_ESCAPE" in json.dumps(err["details"])
    assert not [p for p in files_under(tmp) if "planted" in p.name]


def test_other_jobs_outputs_cannot_be_read(comfy) -> None:
    runtime, settings, tmp = comfy
    planted = Path(settings.output_dir) / "planted]_00001_.png"
    Image.new("RGB", (8, 8)).save(planted)
    try:
        for name in ("planted]_00001_.png [output]", "x.png [temp]"):
            workflow = {"1": {"class_type": "LoadImage", "inputs": {"image": name}},
                        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}}}
            err = error_of(run(runtime, settings, {"workflow": workflow}))
            assert err["code"] == "POLICY_VIOLATION" and "output or temp folder" in err["message"], err
    finally:
        planted.unlink()


def test_whatever_a_job_writes_stays_in_its_folder_and_goes_with_it(comfy) -> None:
    runtime, settings, tmp = comfy
    before = set(files_under(Path(settings.output_dir)))
    result = run(runtime, settings, {"workflow": empty_image_workflow(prefix="deep/er/x")})
    assert "error" not in result, result
    assert result["outputs"][0]["filename"].startswith("x_")
    # Cleanup ran (run() drains it): nothing of the job is left anywhere under ComfyUI's folders.
    assert set(files_under(Path(settings.output_dir))) == before
    assert not list(Path(settings.output_dir).glob("worker-jobs/*/"))


def test_output_nodes_path_inputs_are_put_in_the_jobs_folder(tmp_path: Path) -> None:
    """Every single-line path-like text of an output node, found from the catalogue: dataset savers' folders,
    SaveLoRA's prefix, Preview3D's file; a prompt-like text is left alone."""
    workflow = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
        "2": {"class_type": "SaveImageTextDataSetToFolder", "inputs": {"images": ["1", 0], "folder_name": "ds",
                                                                         "filename_prefix": "img", "mode": "overwrite"}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "keep"}},
    }
    result, comfy = fake_run({"workflow": workflow}, tmp_path)
    [(_, graph, _)] = comfy.submitted
    folder = comfy.cleaned[0].subfolders[0]
    assert graph["2"]["inputs"]["folder_name"] == f"{folder}/ds"
    assert graph["2"]["inputs"]["filename_prefix"] == f"{folder}/img"
    assert graph["2"]["inputs"]["mode"] == "overwrite"
    from comfy_worker.workflow import catalogue as cat
    from comfy_worker.workflow.isolate import names_a_path
    specs = {s.name: s for s in cat.declared_inputs(CATALOGUE["SaveLoRA"])}
    assert names_a_path(specs["prefix"])
    specs = {s.name: s for s in cat.declared_inputs(CATALOGUE["Preview3D"])}
    assert names_a_path(specs["model_file"])
    specs = {s.name: s for s in cat.declared_inputs(CATALOGUE["SaveText"])}
    assert names_a_path(specs["filename_prefix"]) and not names_a_path(specs["text"])


def test_cleanup_finds_the_jobs_folder_under_a_nodes_own_folder(tmp_path: Path) -> None:
    from comfy_worker.comfy.http import job_folders
    sub = "worker-jobs/job-1-abc"
    made = [tmp_path / "output" / sub, tmp_path / "output" / "loras" / sub, tmp_path / "output" / "3d" / "x" / sub,
            tmp_path / "datasets" / sub]
    for folder in made:
        folder.mkdir(parents=True)
    (tmp_path / "output" / "worker-jobs" / "job-2-def").mkdir(parents=True)
    found = job_folders([tmp_path / "output", tmp_path / "datasets"], sub)
    assert sorted(found) == sorted(made)


# ----------------------------------------------------------------------------------------- disclosure


def test_errors_carry_no_paths_and_no_other_jobs(comfy) -> None:
    runtime, settings, tmp = comfy
    other = Path(settings.input_dir) / "worker-jobs" / "other-job-7f3a"
    other.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8)).save(other / "their-private.png")
    Image.new("RGB", (8, 8)).save(Path(settings.input_dir) / "shared.png")
    try:
        workflow = {"1": {"class_type": "LoadImage", "inputs": {"image": "nope.png"}},
                    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}}}
        err = error_of(run(runtime, settings, {"workflow": workflow}))
        text = json.dumps(err)
        assert err["code"] in {"INVALID_WORKFLOW", "INPUT_FETCH_FAILED", "MISSING_MODELS"}, err
        assert "other-job-7f3a" not in text and "their-private" not in text
        assert str(tmp) not in text and str(settings.comfyui_dir) not in text
        # A folder list (the dataset loaders list every input subfolder) leaves the job folders out, and a
        # job cannot name another job's folder.
        for folder in ("nope", "worker-jobs/other-job-7f3a", "worker-jobs"):
            workflow = {"1": {"class_type": "LoadImageDataSetFromFolder", "inputs": {"folder": folder}},
                        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}}}
            err = error_of(run(runtime, settings, {"workflow": workflow}))
            assert err["code"] in {"INVALID_WORKFLOW", "POLICY_VIOLATION"}, err
            if folder == "nope":
                assert "worker-jobs" not in json.dumps(err), err
            else:
                assert "PATH_ESCAPE" in json.dumps(err["details"]), err
    finally:
        shutil.rmtree(other.parent, ignore_errors=True)


def test_a_comfyui_message_is_scrubbed_of_paths_jobs_and_secrets() -> None:
    secret = "s3cr3t-token-value"
    error = WorkerError(ErrorCode.EXECUTION_ERROR, f'File "/opt/comfyui/nodes.py", line 3: cannot read '
                        f"/opt/comfyui/input/worker-jobs/job-9-xyz/a.png from https://u:p@h.example/x?token={secret}",
                        {"traceback": ['  File "/opt/comfyui/execution.py", line 5'],
                         "allowed": ["a.png", "worker-jobs/job-9-xyz/b.png"]})
    payload = error.payload()
    text = json.dumps(payload)
    for gone in ("/opt/comfyui", "job-9-xyz", secret, "u:p@"):
        assert gone not in text
    assert "a.png" in payload["message"] and payload["details"]["allowed"] == ["a.png"]
    assert for_caller({"x": [secret]}, [secret]) == {"x": ["<redacted>"]}
    assert scrub_text("see https://h/v?sig=1") == "see https://h/v?<redacted>"


def test_environment_secrets_never_reach_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", SECRETS["HF_TOKEN"])
    error = WorkerError(ErrorCode.MISSING_MODELS, f"download failed: Authorization: Bearer {SECRETS['HF_TOKEN']}")
    assert SECRETS["HF_TOKEN"] not in error.to_error_string()


def test_a_model_token_never_reaches_the_caller(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failed download's reason quoted its URL, `?token=CIVITAI-SECRET` included."""
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: the connection is refused and requests quotes the URL
    monkeypatch.setenv("CIVITAI_TOKEN", "CIVITAI-ENV-SECRET")
    entry = ModelEntry.model_validate({"filename": "m.safetensors", "folder": "checkpoints", "sha256": "0" * 64,
                                       "url": f"http://127.0.0.1:{port}/api/download?token=CIVITAI-SECRET-123",
                                       "token_env": "CIVITAI_TOKEN"})
    with pytest.raises(DownloadError) as caught:
        ensure_models([entry], tmp_path, options=DownloadOptions(retries=0))
    payload = caught.value.to_worker_error().to_error_string()
    assert "CIVITAI-SECRET-123" not in payload and "CIVITAI-ENV-SECRET" not in payload
    assert f"127.0.0.1:{port}/api/download" in payload


# ----------------------------------------------------------------------------------------- ComfyUI's process


def test_comfyui_environment_is_an_allowlist() -> None:
    environ = {"PATH": "/usr/bin", "LC_ALL": "C", "CUDA_VISIBLE_DEVICES": "0", "PYTORCH_CUDA_ALLOC_CONF": "x",
               "MY_NODE_SETTING": "1", "OTHER": "2", "TORCH_SECRET_TOKEN": "t", **SECRETS,
               "RUNPOD_WEBHOOK_GET_JOB": "http://api/job-take", "RUNPOD_POD_ID": "pod"}
    env = comfyui_environment(environ, ["MY_NODE_*"])
    assert set(env) == {"PATH", "LC_ALL", "CUDA_VISIBLE_DEVICES", "PYTORCH_CUDA_ALLOC_CONF", "MY_NODE_SETTING",
                        "PYTHONUNBUFFERED"}
    assert "HF_TOKEN" in comfyui_environment(environ, ["HF_TOKEN"])  # only when the operator names it


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="switching users needs root")
def test_comfyui_runs_as_the_configured_user() -> None:
    identity = comfyui_identity("nobody")
    assert identity is not None and identity.uid != 0
    env = comfyui_environment({"PATH": os.environ.get("PATH", "/usr/bin"), "HOME": "/root"}, [], identity)
    assert env["HOME"] == identity.home and env["USER"] == "nobody"
    out = subprocess.run(["sh", "-c", "id -u; id -G"], env=env, capture_output=True, text=True, check=True, timeout=10,
                         **identity.popen_args()).stdout.split()
    assert out[0] == str(identity.uid) and "0" not in out[1:]


def test_a_user_the_worker_cannot_become_stops_comfyui_from_starting() -> None:
    from comfy_worker.comfy.isolation import IdentityError
    with pytest.raises(IdentityError, match="no such user"):
        comfyui_identity("no-such-user-here")


@pytest.mark.parametrize("target", TARGETS)
def test_a_custom_node_sees_no_secret_of_the_workers(tmp_path: Path, target: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    nodes = tmp_path / "nodes"
    nodes.mkdir()
    shutil.copy(NODE_FILE, nodes / NODE_FILE.name)
    paths = tmp_path / "extra_model_paths.yaml"
    paths.write_text(f"test:\n  base_path: {tmp_path}\n  custom_nodes: nodes\n")
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MY_NODE_SETTING", "allowed")
    runtime, settings = boot_runtime(tmp_path / "worker", real=target == "real",
                                     COMFYUI_EXTRA_MODEL_PATHS=str(paths),
                                     COMFYUI_ENV_PASSTHROUGH="COMFY_EMULATOR_*,MY_NODE_SETTING")
    try:
        if target == "real":  # the node also runs in a job, as a workflow would make it run
            (nodes / "environment.json").unlink()
            workflow = {**empty_image_workflow(), "9": {"class_type": "EnvironmentReport", "inputs": {}}}
            result = run(runtime, settings, {"workflow": workflow})
            assert "error" not in result, result
        report = json.loads((nodes / "environment.json").read_text())
    finally:
        runtime.shutdown()
    environ = report["environ"]
    assert environ.get("MY_NODE_SETTING") == "allowed" and "PATH" in environ
    leaked = [name for name, value in environ.items() if value in SECRETS.values() or name in SECRETS]
    assert leaked == []
    assert not [n for n in environ if n.startswith("RUNPOD_")]


def test_a_ui_widget_of_unclosed_comments_goes_through_the_worker(tmp_path: Path) -> None:
    """The request that held the worker for 28 s: a UI workflow whose prompt is 120 KB of unclosed `/*`."""
    from .test_workflow_convert import _txt2img
    ui = _txt2img()
    next(n for n in ui["nodes"] if n["id"] == 6)["widgets_values"] = ["/*a" * 40000]
    result, comfy = fake_run({"workflow": ui, "execution_config": {"dry_run": True}}, tmp_path)
    assert result.get("dry_run") is True, result
    assert result["workflow"]["6"]["inputs"]["text"] == "/*a" * 40000
    assert not comfy.submitted
