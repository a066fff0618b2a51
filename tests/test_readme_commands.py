"""Every command in the README's ```bash blocks runs as written, or says why a test cannot run it.

Each line of those blocks must be classified below: a new command fails this test until it is. The cheap ones
run here as a new user would type them (`.venv/bin/...` is this interpreter's environment; the local server's
`localhost:8000` is a server the test starts on a free port, with the emulator as ComfyUI)."""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from comfy_worker_dev.localserver import LocalWorkerServer
from tests.workerkit import worker_env

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"^```bash\n(.*?)^```", re.DOTALL | re.MULTILINE)

# How each command runs here: "cheap" as is, "server" against the local server, "single-job" with the
# emulator as ComfyUI, "run-job" without the placeholder COMFYUI_DIR (the README: then it uses the emulator).
RUN = {
    "COMFYUI_DIR=/path/to/ComfyUI COMFYUI_PYTHON=/path/to/ComfyUI/venv/bin/python ./scripts/run-job.sh": "run-job",
    "./scripts/run-job.sh invert --param width=256 --param method=bilinear": "run-job-named",
    "./scripts/serve.sh": "serve",
    "curl -s -X POST http://localhost:8000/runsync -H 'Content-Type: application/json' -d @test_input.json": "server",
    "curl -s -X POST http://localhost:8000/run -H 'Content-Type: application/json' -d @test_input.json": "server",
    "curl -s -X POST http://localhost:8000/status/<id from /run>": "server",
    ".venv/bin/comfy-run test_input.json --local http://localhost:8000": "server",
    ".venv/bin/python handler.py --help": "cheap",
    ".venv/bin/python -m comfy_run --help": "cheap",
    ".venv/bin/python handler.py": "single-job",
}
# Why the others do not run in a test.
NOT_RUN = {
    "./scripts/test.sh": "the test suite itself",
    ".venv/bin/python handler.py --rp_serve_api": "serves until stopped; the `server` commands run against it",
    "export HF_TOKEN=hf_...": "a placeholder secret for the image build",
    "docker build --secret id=HF_TOKEN,env=HF_TOKEN -t <registry>/<name>:<tag> .": "needs Docker and a GPU image",
    "docker run --rm --gpus all -p 8000:8000 <registry>/<name>:<tag> \\": "needs Docker and a GPU",
    "python -u handler.py --rp_serve_api --rp_api_host 0.0.0.0": "inside the image (docker run above)",
    "docker push <registry>/<name>:<tag>": "needs a registry",
    'curl -s "https://api.runpod.ai/v2/<endpoint id>/runsync" -H "Authorization: Bearer $RUNPOD_API_KEY" \\':
        "needs a deployed RunPod endpoint and an API key",
    "-H 'Content-Type: application/json' -d @test_input.json": "the line above, continued",
}


def readme_commands() -> list[str]:
    """Every line of the README's bash blocks, without its trailing comment."""
    commands = []
    for block in BLOCK.findall((ROOT / "README.md").read_text()):
        for line in block.splitlines():
            command = re.sub(r"\s+#\s.*$", "", line).strip()
            if command and not command.startswith("#"):
                commands.append(command)
    return commands


def as_here(command: str, url: str | None = None) -> str:
    """The command in this test's environment: this interpreter's venv, the test's server URL."""
    bindir = Path(sys.executable).parent
    command = command.replace(".venv/bin/python", shlex.quote(sys.executable))
    command = command.replace(".venv/bin/comfy-run", shlex.quote(str(bindir / "comfy-run")))
    return command.replace("http://localhost:8000", url) if url else command


def shell(command: str, tmp: Path, env: dict[str, str] | None = None, timeout: float = 300) -> str:
    done = subprocess.run(["bash", "-c", command], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
                               **(env or {})})
    assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done.stdout + done.stderr


def test_every_readme_command_is_classified():
    commands = readme_commands()
    unknown = [c for c in commands if c not in RUN and c not in NOT_RUN]
    assert not unknown, f"README commands neither run nor excused here: {unknown}"
    assert set(RUN) | set(NOT_RUN) <= set(commands), "RUN/NOT_RUN name commands the README no longer has"


@pytest.mark.parametrize("command", [c for c, how in RUN.items() if how == "cheap"])
def test_help_commands(command, tmp_path):
    out = shell(as_here(command), tmp_path, timeout=120)
    assert "usage:" in out


def test_help_starts_nothing(tmp_path):
    """handler.py --help prints the SDK's flags and the main settings without starting ComfyUI."""
    out = shell(as_here(".venv/bin/python handler.py --help"), tmp_path,
                env={"COMFYUI_DIR": str(tmp_path / "no-comfyui")}, timeout=120)
    assert "--rp_serve_api" in out and "COMFYUI_DIR" in out and "COMFY_ORG_API_KEY" in out
    assert "ComfyUI ready" not in out and "starting ComfyUI" not in out


def test_server_commands_as_written(tmp_path):
    env = worker_env(tmp_path, LOG_LEVEL="INFO")
    with LocalWorkerServer(env) as server:
        runsync, run, status, client = [c for c, how in RUN.items() if how == "server"]
        done = json.loads(shell(as_here(runsync, server.url), tmp_path))
        assert done["status"] == "COMPLETED" and done["output"]["images"][0]["type"] == "base64"
        job_id = json.loads(shell(as_here(run, server.url), tmp_path))["id"]
        finished = json.loads(shell(as_here(status, server.url).replace("<id from /run>", job_id), tmp_path))
        assert finished["status"] == "COMPLETED"
        out = shell(as_here(client, server.url) + f" --out {tmp_path / 'outputs'}", tmp_path)
        assert "COMPLETED: 1 output(s)" in out and len(list((tmp_path / "outputs").iterdir())) == 1


def test_single_job_mode_runs_test_input(tmp_path):
    env = worker_env(tmp_path, LOG_LEVEL="INFO")
    out = shell(as_here(".venv/bin/python handler.py"), tmp_path, env=env)
    assert "outcome=completed" in out


@pytest.mark.slow
def test_run_job_script_with_the_emulator(tmp_path):
    """The README's main command; without COMFYUI_DIR it runs against the emulator, as the README says."""
    command = [c for c, how in RUN.items() if how == "run-job"][0]
    bare = re.sub(r"^(\w+=\S+\s+)+", "", command) + f" --out {tmp_path / 'out'}"
    out = shell(bare, tmp_path, env={"COMFYUI_DIR": "", "COMFYUI_PYTHON": ""}, timeout=600)
    assert "status: COMPLETED" in out
    [saved] = (tmp_path / "out").iterdir()
    assert saved.read_bytes()[:8] == base64.b64decode("iVBORw0KGgo=")[:8]


@pytest.mark.slow
def test_run_job_script_runs_the_example_deployment_by_name(tmp_path):
    """The README's main command with a deployed workflow's id: the request is a few dozen bytes, the image
    is the size asked for."""
    [command] = [c for c, how in RUN.items() if how == "run-job-named"]
    out = shell(f"{command} --out {tmp_path / 'out'}", tmp_path, env={"COMFYUI_DIR": "", "COMFYUI_PYTHON": ""},
                timeout=600)
    assert "status: COMPLETED" in out and "workflow: invert version " in out
    assert 'request (84 bytes): {"input": {"workflow_id": "invert"' in out
    [saved] = (tmp_path / "out").iterdir()
    from PIL import Image

    with Image.open(saved) as img:
        assert img.size == (256, 128)


@pytest.mark.slow
def test_serve_script_answers_runsync(tmp_path):
    """./scripts/serve.sh as written (on a free port, so tests can run side by side), stopped as a supervisor
    would stop it."""
    import signal
    import time

    import requests

    from comfy_worker_dev.localserver import free_port

    port = free_port()
    log = open(tmp_path / "serve.log", "wb")
    proc = subprocess.Popen(["./scripts/serve.sh", "--port", str(port)], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "COMFYUI_DIR": "", "PYTHON": sys.executable})
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            try:
                answer = requests.post(f"http://127.0.0.1:{port}/runsync", timeout=60,
                                       json=json.loads((ROOT / "test_input.json").read_text())).json()
                break
            except requests.RequestException:
                assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
                time.sleep(0.5)
        assert answer["status"] == "COMPLETED" and answer["output"]["images"][0]["type"] == "base64"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        log.close()
