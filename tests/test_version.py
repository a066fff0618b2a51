"""One version of the worker: written once, carried by every result (success, dry run, failure) and by the
start-up log line that says whether the worker is ready or why it cannot start."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from comfy_worker import __version__
from comfy_worker.app import create_worker
from comfy_worker.comfy.fake import FakeComfy
from comfy_worker.job import run_job
from comfy_worker.schema import DryRunResult, ErrorPayload, JobResult
from comfy_worker.settings import Settings
from comfy_worker_dev.emulator import FAULTS_ENV

from .captures import capture
from .workerkit import empty_image_workflow, worker_env

REPO = Path(__file__).resolve().parents[1]
SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?$")


def test_the_version_is_semantic_and_written_once() -> None:
    assert SEMVER.match(__version__), __version__
    pyproject = (REPO / "pyproject.toml").read_text()
    project = pyproject.split("[project]", 1)[1].split("\n[", 1)[0]
    # pyproject.toml reads it from the package: no second copy to drift.
    assert not re.search(r"^version\s*=", project, re.MULTILINE)
    assert re.search(r'^dynamic = \[.*"version".*\]$', project, re.MULTILINE)
    assert 'version = {attr = "comfy_worker.__version__"}' in pyproject
    init = (REPO / "src" / "comfy_worker" / "__init__.py").read_text()
    assert re.findall(r'^__version__ = "([^"]+)"$', init, re.MULTILINE) == [__version__]


def test_the_installed_distribution_has_the_packages_version() -> None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        installed = version("comfy-worker")
    except PackageNotFoundError:
        pytest.skip("the project is not installed in this environment (scripts/test.sh installs it)")
    assert installed == __version__


def _run(job_input: Any, tmp_path: Path) -> dict[str, Any]:
    comfy = FakeComfy(capture("object_info.json"), root=tmp_path / "comfyui")
    return asyncio.run(run_job({"id": "job-1", "input": job_input}, comfy, Settings(), lambda payload: None))


def test_a_completed_job_names_the_worker_version(tmp_path: Path) -> None:
    result = _run({"workflow": empty_image_workflow()}, tmp_path)
    assert result["worker_version"] == __version__
    assert JobResult.model_validate(result).worker_version == __version__


def test_a_dry_run_names_the_worker_version(tmp_path: Path) -> None:
    single = _run({"workflow": empty_image_workflow(), "execution_config": {"dry_run": True}}, tmp_path)
    assert single["worker_version"] == __version__
    DryRunResult.model_validate(single)
    batch = _run({"workflow": empty_image_workflow(), "inputs": [{}, {}],
                  "execution_config": {"dry_run": True}}, tmp_path)
    assert batch["worker_version"] == __version__


@pytest.mark.parametrize("job_input", [
    {"workflow": {}},                                                         # INVALID_INPUT
    {"workflow": {"1": {"class_type": "NoSuchNode", "inputs": {}}}},          # INVALID_WORKFLOW
], ids=["invalid-input", "invalid-workflow"])
def test_a_failed_job_names_the_worker_version(tmp_path: Path, job_input: dict[str, Any]) -> None:
    result = _run(job_input, tmp_path)
    error = json.loads(result["error"])
    assert error["worker_version"] == __version__
    assert ErrorPayload.model_validate(error).worker_version == __version__


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def app_log() -> Iterator[_Lines]:
    # On the worker's own logger: configure_logging replaces the root's handlers, so caplog would miss lines.
    handler = _Lines()
    logger = logging.getLogger("comfy_worker.app")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


def test_the_ready_line_names_the_version(tmp_path: Path, app_log: _Lines) -> None:
    app = create_worker(Settings.from_env(worker_env(tmp_path)))
    try:
        assert app.unfit is None
        [ready] = [line for line in app_log.lines if "ready to take jobs" in line]
        assert ready.startswith(f"comfy-worker {__version__}: cold start: {{")
    finally:
        app.comfy.shutdown()


def test_the_unfit_line_names_the_version(tmp_path: Path, app_log: _Lines) -> None:
    os.environ[FAULTS_ENV] = json.dumps({"exit_at_start": 3})
    try:
        app = create_worker(Settings.from_env(worker_env(tmp_path)))
    finally:
        os.environ.pop(FAULTS_ENV, None)
    try:
        assert app.unfit is not None
        [unfit] = [line for line in app_log.lines if "cannot start" in line]
        assert unfit.startswith(f"comfy-worker {__version__}: the worker cannot start: ComfyUI is not ready")
    finally:
        app.comfy.shutdown()


def test_a_misconfigured_worker_names_the_version(monkeypatch: pytest.MonkeyPatch, app_log: _Lines) -> None:
    monkeypatch.setenv("COMFYUI_PORT", "not-a-port")
    app = create_worker()
    assert app.unfit is not None and app.unfit.startswith("the worker is misconfigured: ")
    assert app_log.lines == [f"comfy-worker {__version__}: the worker cannot start: {app.unfit}"]


def test_examples_in_the_docs_name_this_version() -> None:
    # Hand-written and recorded examples alike: a version bump must not leave an older one behind.
    documents = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")),
                 *sorted((REPO / "docs").glob("examples/*.json"))]
    for path in documents:
        for found in re.findall(r'\\?"worker_version\\?": \\?"([^"\\]+)', path.read_text()):
            assert found == __version__, f"{path.name} shows worker_version {found}"
