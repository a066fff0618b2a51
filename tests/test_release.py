"""The release pipeline (.github/workflows/release.yml) against what it builds from: the pins, the
variants' manifests, the version, CHANGELOG.md and the RunPod Hub files; and the workflows through
actionlint's checks."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from comfy_worker import __version__
from comfy_worker.errors import ErrorCode
from comfy_worker.models.manifest import FetchWhen, load_manifest
from comfy_worker.schema import JobInput, JobResult, parse_job_input

from .scriptmodules import load_script

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / ".github" / "workflows"
RELEASE = yaml.safe_load((WORKFLOWS / "release.yml").read_text())
VARIANTS = REPO / "variants"


release = load_script(REPO / "scripts" / "release.py")


def _tool(name: str) -> str:
    found = shutil.which(name) or str(Path(sys.executable).parent / name)
    if not Path(found).is_file():
        pytest.skip(f"{name} is not installed (requirements-dev.txt)")
    return found


# --- linters


def test_workflows_pass_actionlints_checks() -> None:
    """jactionlint's default profile: actionlint's checks (syntax, expressions, action inputs, shellcheck on
    every run script) and its security rules (actions pinned by commit, timeouts, injection)."""
    linter = _tool("jactionlint")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    files = sorted(str(path) for path in WORKFLOWS.glob("*.yml"))
    assert len(files) == 2
    result = subprocess.run([linter, "--no-color", *files], capture_output=True, text=True, timeout=120,
                            env=env, cwd=REPO, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    if shutil.which("shellcheck", path=env["PATH"]):
        assert "shellcheck was not found" not in result.stderr  # the run scripts were checked too


def test_actionlint_finds_a_broken_workflow(tmp_path: Path) -> None:
    linter = _tool("jactionlint")
    broken = tmp_path / "broken.yml"
    broken.write_text("on: push\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    timeout-minutes: 5\n"
                      "    steps:\n      - run: echo ${{ github.event.pull_request.title }}\n")
    result = subprocess.run([linter, "--no-color", str(broken)], capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 1 and "pull_request.title" in result.stdout


def test_run_scripts_take_values_from_the_environment_not_expressions() -> None:
    # An expression inside a script is pasted into the shell before it runs (script injection); every value
    # comes in through `env:`.
    for path in WORKFLOWS.glob("*.yml"):
        for job in yaml.safe_load(path.read_text())["jobs"].values():
            for step in job["steps"]:
                assert "${{" not in step.get("run", ""), (path.name, step.get("name"))


# --- the pins


def _pins_in_force() -> dict[str, str]:
    """What docker/pins.sh exports, the way every Dockerfile step reads the pins."""
    listed = subprocess.run([str(REPO / "docker" / "pins.sh")], capture_output=True, text=True, check=True,
                            timeout=30, env={"PATH": "/usr/bin:/bin"})
    return dict(line.split("=", 1) for line in listed.stdout.splitlines())


def _github_output(text: str) -> dict[str, str]:
    """$GITHUB_OUTPUT as the runner reads it: KEY=VALUE lines and KEY<<DELIMITER blocks."""
    outputs: dict[str, str] = {}
    lines = iter(text.splitlines())
    for line in lines:
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            key, delimiter = line.split("<<", 1)
            block = []
            for inner in lines:
                if inner == delimiter:
                    break
                block.append(inner)
            outputs[key] = "\n".join(block)
        else:
            key, _, value = line.partition("=")
            outputs[key] = value
    return outputs


def _run_step(step: dict[str, Any], env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """A workflow step's script, run as the runner runs it (bash -e) in the repository, and what it wrote
    to $GITHUB_OUTPUT."""
    output = tmp_path / "github-output"
    output.write_text("")
    subprocess.run(["bash", "-e", "-c", step["run"]], cwd=REPO, check=True, timeout=60,
                   env={"PATH": os.environ["PATH"], "GITHUB_OUTPUT": str(output), **env})
    return _github_output(output.read_text())


def _prepare(tmp_path: Path, **extra: str) -> dict[str, str]:
    [step] = [s for s in RELEASE["jobs"]["prepare"]["steps"] if s.get("id") == "facts"]
    env = {"TAG": f"v{__version__}", "REGISTRY": "ghcr.io", "NAMESPACE": "Some-Owner",
           "IMAGE_NAME": "comfy-worker", "DOCKERHUB_NAMESPACE": "", **extra}
    return _run_step(step, env, tmp_path)


def _build_steps() -> list[tuple[str, dict[str, Any]]]:
    return [(name, step) for name, job in RELEASE["jobs"].items() for step in job["steps"]
            if str(step.get("uses", "")).startswith("docker/build-push-action@")]


def test_the_pipelines_build_arguments_are_the_pins(tmp_path: Path) -> None:
    pins = _pins_in_force()
    outputs = _prepare(tmp_path)
    steps = _build_steps()
    assert [name for name, _ in steps] == ["base", "base", "variants"]
    for job_name, step in steps:
        matrix = RELEASE["jobs"][job_name].get("strategy", {}).get("matrix", {})
        variants = ["base"] if job_name == "base" else matrix["variant"]
        for variant in variants:
            text = (step["with"]["build-args"]
                    .replace("${{ needs.prepare.outputs.build-args }}", outputs["build-args"])
                    .replace("${{ matrix.variant }}", variant))
            assert "${{" not in text, text
            build_args = dict(line.split("=", 1) for line in text.strip().splitlines())
            assert build_args.pop("MODELS_MANIFEST_FILE") == f"variants/{variant}/models.yaml"
            assert build_args == pins


def test_no_pin_value_is_repeated_in_the_workflows() -> None:
    text = "\n".join(path.read_text() for path in WORKFLOWS.glob("*.yml"))
    for key, value in _pins_in_force().items():
        assert value not in text, f"{key}={value} is written in a workflow instead of read from pins.env"


def test_the_prepare_step_names_the_images(tmp_path: Path) -> None:
    outputs = _prepare(tmp_path)
    assert outputs["version"] == __version__
    assert outputs["image"] == "ghcr.io/some-owner/comfy-worker"  # registries want lower case
    assert outputs["dockerhub-image"] == ""
    with_hub = _prepare(tmp_path, DOCKERHUB_NAMESPACE="SomeOne")
    assert with_hub["dockerhub-image"] == "docker.io/someone/comfy-worker"


def test_a_tag_that_is_not_the_version_stops_the_release(tmp_path: Path) -> None:
    with pytest.raises(subprocess.CalledProcessError):
        _prepare(tmp_path, TAG="v99.0.0")


# --- the variants


def test_every_variant_in_the_matrix_has_a_manifest_and_every_manifest_a_place_in_the_matrix() -> None:
    matrix = RELEASE["jobs"]["variants"]["strategy"]["matrix"]["variant"]
    assert RELEASE["jobs"]["base"]["env"]["VARIANT"] == "base"
    built = ["base", *matrix]
    assert len(set(built)) == len(built)
    on_disk = sorted(path.parent.name for path in VARIANTS.glob("*/models.yaml"))
    assert sorted(built) == on_disk
    assert sorted(os.listdir(VARIANTS)) == on_disk  # no folder without a manifest
    assert release.variants() == ["base", *sorted(matrix)]


@pytest.mark.parametrize("variant", sorted(path.parent.name for path in VARIANTS.glob("*/models.yaml")))
def test_every_variant_manifest_validates_with_checksums(variant: str) -> None:
    manifest = load_manifest(VARIANTS / variant / "models.yaml")  # the worker's own loader and schema
    if variant == "base":
        assert manifest.models == []
        return
    assert manifest.models, f"variant {variant} bakes in no model"
    for entry in manifest.models:
        assert re.fullmatch(r"[0-9a-f]{64}", entry.sha256), entry.label
        assert entry.size and entry.size > 0, entry.label
        assert entry.fetch is FetchWhen.BUILD and entry.token_env is None, entry.label  # public files
        # Pinned to the commit whose checksum the manifest quotes: a later upload cannot change the file.
        assert re.search(r"/resolve/[0-9a-f]{40}/", entry.url), entry.url
        assert entry.url.rsplit("/", 1)[1] == entry.filename.rsplit("/", 1)[-1]
    text = (VARIANTS / variant / "models.yaml").read_text()
    assert "https://huggingface.co/" in text.split("models:", 1)[0], "the page the checksum came from"


# --- the version, the tags, the notes


def test_check_ties_the_tag_to_the_package_version() -> None:
    assert release.check(f"v{__version__}") == __version__
    assert release.package_version() == __version__
    for bad in (f"{__version__}", "v1.2", "vX.Y.Z", "v99.0.0"):
        with pytest.raises(release.ReleaseError):
            release.check(bad)


def test_image_tags() -> None:
    images = ["ghcr.io/o/comfy-worker", "docker.io/o/comfy-worker"]
    assert release.tags("1.2.3", "sd15", images[:1]) == ["ghcr.io/o/comfy-worker:1.2.3-sd15",
                                                          "ghcr.io/o/comfy-worker:1-sd15"]
    assert release.tags("1.2.3", "base", images) == [
        "ghcr.io/o/comfy-worker:1.2.3-base", "ghcr.io/o/comfy-worker:1-base", "ghcr.io/o/comfy-worker:1.2.3",
        "ghcr.io/o/comfy-worker:1", "docker.io/o/comfy-worker:1.2.3-base", "docker.io/o/comfy-worker:1-base",
        "docker.io/o/comfy-worker:1.2.3", "docker.io/o/comfy-worker:1"]
    # A pre-release moves no major tag.
    assert release.tags("1.3.0-rc.1", "base", images[:1]) == ["ghcr.io/o/comfy-worker:1.3.0-rc.1-base",
                                                               "ghcr.io/o/comfy-worker:1.3.0-rc.1"]


def test_the_tags_step_runs_the_release_script(tmp_path: Path) -> None:
    [step] = [s for s in RELEASE["jobs"]["variants"]["steps"] if s.get("id") == "tags"]
    outputs = _run_step(step, {"TAG": f"v{__version__}", "VARIANT": "sd15", "IMAGE": "ghcr.io/o/comfy-worker",
                               "DOCKERHUB_IMAGE": "docker.io/o/comfy-worker"}, tmp_path)
    assert outputs["tags"].splitlines() == release.tags(
        __version__, "sd15", ["ghcr.io/o/comfy-worker", "docker.io/o/comfy-worker"])
    assert re.fullmatch(r"[0-9a-f]{40}", outputs["revision"])


def test_release_notes_are_the_changelog_entry_and_the_images() -> None:
    text = release.notes(__version__, ["ghcr.io/o/comfy-worker"])
    assert text.startswith(release.changelog_entry(__version__))
    for variant in release.variants():
        assert f"`ghcr.io/o/comfy-worker:{__version__}-{variant}`" in text


# --- the pipeline's order: smoke before push, GitHub release after every image


def test_the_base_image_is_run_before_it_is_pushed() -> None:
    steps = RELEASE["jobs"]["base"]["steps"]
    kinds = []
    for step in steps:
        if str(step.get("uses", "")).startswith("docker/build-push-action@"):
            kinds.append("push" if step["with"].get("push") else "load")
            if not step["with"].get("push"):
                assert step["with"]["load"] is True
                smoke_tag = step["with"]["tags"]
        elif "docker run" in step.get("run", ""):
            kinds.append("run")
            assert step["run"].strip() == f"docker run --rm {smoke_tag}"
    assert kinds == ["load", "run", "push"]
    # A layer cache in the registry: written by the base build, read by every build.
    for _, step in _build_steps():
        assert step["with"]["cache-from"].startswith("type=registry,ref=")
    assert RELEASE["jobs"]["base"]["steps"][-3]["with"]["cache-to"].endswith(",mode=max")


def test_the_github_release_comes_from_the_tag_after_every_image() -> None:
    assert RELEASE[True]["push"]["tags"] == ["v*.*.*"]  # PyYAML reads the key `on` as true
    job = RELEASE["jobs"]["release"]
    assert set(job["needs"]) == {"prepare", "base", "variants"}
    script = "\n".join(step.get("run", "") for step in job["steps"])
    assert 'gh release create "$TAG" --verify-tag' in script
    assert RELEASE["env"]["TAG"] == "${{ inputs.tag || github.ref_name }}"


# --- CHANGELOG.md and the RunPod Hub files


def test_the_changelog_has_an_entry_for_this_version_that_describes_the_api() -> None:
    text = (REPO / "CHANGELOG.md").read_text()
    assert text.startswith("# Changelog\n") and "https://keepachangelog.com/en/1.1.0/" in text
    assert "https://semver.org/spec/v2.0.0.html" in text
    headings = re.findall(r"^## \[([^\]]+)\]", text, re.MULTILINE)
    assert headings[:2] == ["Unreleased", __version__]
    entry = release.changelog_entry(__version__)
    for field in JobInput.model_fields:
        assert f"`{field}`" in entry, field
    for field in JobResult.model_fields:
        assert f"`{field}`" in entry, field
    for code in ErrorCode:
        assert f"`{code.value}`" in entry, code.value
    # What each kind of version may change is said once, at the top.
    for word in ("patch", "minor", "major"):
        assert re.search(rf"\*\*{word}\*\*", text.split("## [")[0], re.IGNORECASE), word


def test_the_hub_files_fit_this_version() -> None:
    """The Hub builds and tests the released commit: its test job must be a valid request of this version,
    and both files must allow only hosts that run the image's CUDA build."""
    hub = json.loads((REPO / ".runpod" / "hub.json").read_text())
    tests = json.loads((REPO / ".runpod" / "tests.json").read_text())
    for test in tests["tests"]:
        parse_job_input(test["input"])
    cuda = re.search(r"nvidia/cuda:(\d+\.\d+)", _pins_in_force()["BASE_IMAGE"])
    assert cuda
    assert hub["config"]["allowedCudaVersions"] == tests["config"]["allowedCudaVersions"] == [cuda.group(1)]
    env_keys = {item["key"] for item in hub["config"]["env"]}
    assert {item["key"] for item in tests["config"]["env"]} <= env_keys


def test_ci_runs_the_readmes_test_command_on_the_images_python(tmp_path: Path) -> None:
    ci = yaml.safe_load((WORKFLOWS / "ci.yml").read_text())
    steps = ci["jobs"]["test"]["steps"]
    [pins_step] = [step for step in steps if step.get("id") == "pins"]
    assert _run_step(pins_step, {}, tmp_path) == {"python-version": _pins_in_force()["PYTHON_VERSION"]}
    assert steps[-1]["run"] == "./scripts/test.sh -q -p no:cacheprovider"
    assert "./scripts/test.sh" in (REPO / "README.md").read_text()
