import os
from collections.abc import Iterator

import pytest

from .captures import capture
from comfy_worker_dev.emulator import EmulatorHandle, start_emulator

# Workers the tests start from their own environment still let the emulator read its fault switches.
os.environ.setdefault("COMFYUI_ENV_PASSTHROUGH", "COMFY_EMULATOR_*")


@pytest.fixture
def object_info():
    return capture("object_info.json")


@pytest.fixture(scope="module")
def emu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorHandle]:
    """One ComfyUI emulator shared by the tests of a module."""
    handle = start_emulator(tmp_path_factory.mktemp("emulator"))
    yield handle
    handle.stop()
