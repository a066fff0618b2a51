"""Every setting a document's table names is a real setting, so renamed or removed ones cannot linger."""

import re

import pytest

from comfy_worker_dev import reference
from comfy_worker.errors import ErrorCode
from comfy_worker.settings import Settings

# Variables read by other programs (the runpod SDK, the downloader per models.yaml entry, the platform).
NOT_OURS = re.compile(r"^(RUNPOD_|AWS_|HF_TOKEN$|CIVITAI_TOKEN$|UVICORN_|PYTORCH_|CUDA_|NVIDIA_|SMOKE_|LD_PRELOAD$|FUZZ_)")
# worker-comfyui's own variables, which docs/migration.md maps to ours.
WORKER_COMFYUI = {"NETWORK_VOLUME_DEBUG", "SERVE_API_LOCALLY", "PUBLIC_KEY"}
ROW = re.compile(r"^\|\s*`([A-Z][A-Z0-9_]+)`\s*\|", re.MULTILINE)


@pytest.mark.parametrize("path", [p for p in reference.documents() if p.exists()], ids=lambda p: p.name)
def test_table_rows_name_real_settings(path):
    ours = set(Settings.env_names().values())
    # Tables also list error codes, RunPod job statuses and the Dockerfile's build arguments.
    ours |= {code.value for code in ErrorCode} | {"IN_QUEUE", "IN_PROGRESS", "TIMED_OUT"}
    ours |= set(re.findall(r"^ARG ([A-Z0-9_]+)", (reference.ROOT / "Dockerfile").read_text(), re.MULTILINE))
    # ... and the release workflow's repository variables and secrets.
    release = (reference.ROOT / ".github" / "workflows" / "release.yml").read_text()
    ours |= set(re.findall(r"\b(?:vars|secrets)\.([A-Z0-9_]+)", release))
    unknown = [name for name in ROW.findall(path.read_text()) if "_" in name and name not in ours
               and not NOT_OURS.match(name) and not (path.name == "migration.md" and name in WORKER_COMFYUI)]
    assert unknown == [], f"{path.name} names settings that do not exist: {unknown}"
