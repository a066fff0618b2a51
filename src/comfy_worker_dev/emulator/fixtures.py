"""pytest fixtures for the ComfyUI emulator. Use with `pytest_plugins = ["comfy_worker_dev.emulator.fixtures"]`
or import the fixture into a conftest."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from . import EmulatorHandle, start_emulator


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[EmulatorHandle]:
    """A fresh emulator per test, stopped afterwards."""
    handle = start_emulator(tmp_path)
    try:
        yield handle
    finally:
        handle.stop()
