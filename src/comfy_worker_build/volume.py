"""Build time: write the model folders of the pinned ComfyUI as JSON (read by the worker at start to map
them onto a network volume), or print the extra_model_paths.yaml a volume would get.

    python -m comfy_worker_build.volume folders --comfyui-dir /comfyui --out /comfyui/model_folders.json
    python -m comfy_worker_build.volume yaml --folders model_folders.json [--volume /runpod-volume]
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from comfy_worker.models.volume import ModelFolders, read_folders_from_comfyui, render_yaml, volume_config

log = logging.getLogger("comfy_worker_build.volume")


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level="INFO", format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    parser = argparse.ArgumentParser(prog="python -m comfy_worker_build.volume")
    commands = parser.add_subparsers(dest="command", required=True)
    folders_cmd = commands.add_parser("folders", help="write ComfyUI's model folders as JSON (build time)")
    folders_cmd.add_argument("--comfyui-dir", type=Path, required=True)
    folders_cmd.add_argument("--python", default=sys.executable, help="ComfyUI's interpreter")
    folders_cmd.add_argument("--out", type=Path, required=True)
    yaml_cmd = commands.add_parser("yaml", help="print extra_model_paths.yaml for a volume")
    yaml_cmd.add_argument("--folders", type=Path, required=True, help="model_folders.json")
    yaml_cmd.add_argument("--volume", type=Path, default=Path("/runpod-volume"))
    yaml_cmd.add_argument("--custom-nodes", action="store_true", help="also map custom_nodes")
    args = parser.parse_args(argv)
    if args.command == "folders":
        folders = read_folders_from_comfyui(args.comfyui_dir, args.python)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(folders.model_dump_json(indent=1) + "\n", encoding="utf-8")
        log.info("%d model folders of ComfyUI %s written to %s", len(folders.folders),
                 folders.comfyui_version or "(unknown version)", args.out)
        return 0
    config = volume_config(ModelFolders.load(args.folders), args.volume, include_custom_nodes=args.custom_nodes)
    sys.stdout.write(render_yaml(config))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
