"""Generate the `env` list of `.runpod/hub.json` from :class:`Settings`, so the Hub form documents every
variable the worker reads.

    PYTHONPATH=src python -m comfy_worker_build.hub            # rewrite .runpod/hub.json in place
    PYTHONPATH=src python -m comfy_worker_build.hub --check    # exit 1 when it is out of date
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from comfy_worker.settings import Settings

log = logging.getLogger(__name__)

# Secrets the manifest's `token_env` usually names; read by the model downloader, not by Settings.
TOKEN_VARIABLES: list[dict[str, Any]] = [
    {"key": "HF_TOKEN", "input": {"name": "Hugging Face token", "type": "string", "default": "",
                                  "description": "Token for gated Hugging Face models that models.yaml lists "
                                                 "with `token_env: HF_TOKEN` (start and on_demand entries).",
                                  "advanced": True}},
    {"key": "CIVITAI_TOKEN", "input": {"name": "Civitai token", "type": "string", "default": "",
                                       "description": "Token for Civitai downloads that models.yaml lists with "
                                                      "`token_env: CIVITAI_TOKEN`.", "advanced": True}},
]
# Shown in the Hub form's main section; everything else is under "advanced".
PROMINENT = {"LOG_LEVEL", "NETWORK_VOLUME_PATH", "INCLUDE_TEMP_OUTPUTS", "COMFYUI_EXTRA_ARGS"}
# Values that depend on the machine that built the settings, not on the image.
IMAGE_DEFAULTS = {"COMFYUI_PYTHON": "/opt/venv/bin/python", "COMFYUI_MODEL_FOLDERS": "/comfyui/model_folders.json",
                  "MODELS_MANIFEST": "/worker/models.yaml"}


def env_entries() -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    for name, field in Settings.model_fields.items():
        key = Settings.env_names()[name]
        default = IMAGE_DEFAULTS.get(key, field.default)
        spec: dict[str, Any] = {"name": key.replace("_", " ").capitalize(), "description": field.description or ""}
        if field.annotation is bool:
            spec.update(type="boolean", default=bool(default), trueValue="true", falseValue="false")
        elif field.annotation in (int, float):
            spec.update(type="number", default=default)
            for bound in field.metadata:
                for attr, hub_key in (("ge", "min"), ("gt", "min"), ("le", "max"), ("lt", "max")):
                    if getattr(bound, attr, None) is not None:
                        spec[hub_key] = getattr(bound, attr)
        else:
            spec.update(type="string", default="" if default is None else str(default))
            if key == "LOG_LEVEL":
                spec["options"] = [{"label": v, "value": v} for v in ("DEBUG", "INFO", "WARNING", "ERROR")]
        if key not in PROMINENT:
            spec["advanced"] = True
        entries.append({"key": key, "input": spec})
    return entries + TOKEN_VARIABLES


def render(hub: dict[str, Any]) -> dict[str, Any]:
    hub = dict(hub)
    hub["config"] = {**hub["config"], "env": env_entries()}
    return hub


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level="INFO", format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    parser = argparse.ArgumentParser(prog="python -m comfy_worker_build.hub")
    parser.add_argument("--hub", type=Path, default=Path(".runpod/hub.json"))
    parser.add_argument("--check", action="store_true", help="only report whether the file is up to date")
    args = parser.parse_args(argv)
    current = json.loads(args.hub.read_text(encoding="utf-8"))
    wanted = render(current)
    if args.check:
        if wanted != current:
            log.error("%s is out of date; run python -m comfy_worker_build.hub", args.hub)
            return 1
        return 0
    args.hub.write_text(json.dumps(wanted, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    log.info("%s: %d environment variables", args.hub, len(wanted["config"]["env"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
