import itertools
import os
from collections.abc import Iterator

import pytest

from .captures import capture
from comfy_worker_dev.emulator import EmulatorHandle, start_emulator

# Workers the tests start from their own environment still let the emulator read its fault switches.
os.environ.setdefault("COMFYUI_ENV_PASSTHROUGH", "COMFY_EMULATOR_*")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Spread the long tests (marked `slow`) over the test processes, each at the head of one's share.

    pytest-xdist's worksteal hands each of W processes an equal contiguous share of this list, and an idle one
    takes the tail of the longest queue. Long tests lined up together would run one after another in a single
    share; at the heads of all shares they start at once, and the short ones are what moves between processes.
    """
    workers = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    slow = [item for item in items if item.get_closest_marker("slow")]
    rest = iter([item for item in items if not item.get_closest_marker("slow")])
    ordered: list[pytest.Item] = []
    left = len(items)
    for share in range(workers):
        size = left // (workers - share)  # as worksteal sizes the shares
        heads = slow[share::workers]
        ordered += heads + list(itertools.islice(rest, max(0, size - len(heads))))
        left -= size
    ordered += list(rest)
    items[:] = ordered


@pytest.fixture
def object_info():
    return capture("object_info.json")


@pytest.fixture(scope="module")
def emu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorHandle]:
    """One ComfyUI emulator shared by the tests of a module."""
    handle = start_emulator(tmp_path_factory.mktemp("emulator"))
    yield handle
    handle.stop()
