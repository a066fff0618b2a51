"""The README's tables of settings and error codes are generated from the code and must match it."""

from comfy_worker_dev import reference
from comfy_worker.errors import CATALOGUE, ErrorCode
from comfy_worker.settings import Settings


def test_generated_blocks_are_current():
    for path in reference.documents():
        if path.exists():
            text = path.read_text()
            assert reference.render(text) == text, f"{path.name} is stale: run python -m comfy_worker_dev.reference --write"


def test_readme_lists_every_variable_and_code():
    readme = (reference.ROOT / "README.md").read_text()
    for env in Settings.env_names().values():
        assert f"`{env}`" in readme
    for code in ErrorCode:
        assert f"`{code.value}`" in readme
    assert set(CATALOGUE) == set(ErrorCode)
