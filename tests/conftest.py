import pytest

from .captures import capture


@pytest.fixture
def object_info():
    return capture("object_info.json")
