"""Map a network volume onto every model folder ComfyUI knows, through ``extra_model_paths.yaml``.

The folder names come from the pinned ComfyUI itself: at image build time
:func:`read_folders_from_comfyui` imports its ``folder_paths`` in ComfyUI's interpreter and
``python -m comfy_worker_build.volume folders`` writes them to ``model_folders.json``. At start-up the
worker writes the YAML for the volume that is actually mounted and passes it to ComfyUI with
``--extra-model-paths-config``.

Volume layouts searched (both, so volumes prepared for other ComfyUI workers keep working)::

    /runpod-volume/models/<folder>/...            e.g. /runpod-volume/models/checkpoints/x.safetensors
    /runpod-volume/ComfyUI/models/<folder>/...    the layout of a ComfyUI installed on the volume

Legacy sub-folders ComfyUI itself searches (``models/unet`` for ``diffusion_models``, ``models/clip`` for
``text_encoders``, ``models/t2i_adapter`` for ``controlnet``) are searched on the volume too.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..settings import Settings

log = logging.getLogger(__name__)

# Folders ComfyUI searches besides `models/<key>` for a key (its own defaults, relative to its base).
LEGACY_SUBFOLDERS: dict[str, tuple[str, ...]] = {
    "diffusion_models": ("models/unet",),
    "text_encoders": ("models/clip",),
    "controlnet": ("models/t2i_adapter",),
}
# Keys ComfyUI keeps beside `models/`, not inside it.
BASE_LEVEL_KEYS = frozenset({"custom_nodes", "datasets", "fonts"})
# Keys that hold code rather than data: mapped only on request.
CODE_KEYS = frozenset({"custom_nodes"})
VOLUME_LAYOUTS: dict[str, str] = {"runpod_volume": "", "runpod_volume_comfyui": "ComfyUI"}

# Run in ComfyUI's interpreter with ComfyUI's folder as the working directory; prints
# {key: [path relative to ComfyUI's base folder, ...]}.
_READ_FOLDERS = r"""
import json, os, sys
sys.path.insert(0, os.getcwd())
import folder_paths
base = os.path.abspath(folder_paths.base_path)
out = {}
for key, (paths, _exts) in folder_paths.folder_names_and_paths.items():
    rel = []
    for p in paths:
        p = os.path.abspath(p)
        if os.path.commonpath([p, base]) == base:
            rel.append(os.path.relpath(p, base).replace(os.sep, "/"))
    out[key] = rel
version = None
try:
    import comfyui_version
    version = comfyui_version.__version__
except Exception:
    pass
print(json.dumps({"comfyui_version": version, "folders": out}))
"""


class ModelFolders(BaseModel):
    """ComfyUI's model folder keys, each with its default folders relative to ComfyUI's base folder."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    comfyui_version: str | None = None
    folders: dict[str, list[str]] = Field(min_length=1)

    @classmethod
    def from_keys(cls, keys: Iterable[str], comfyui_version: str | None = None) -> ModelFolders:
        """Folders from a bare key list (as `GET /models` returns it), with ComfyUI's default layout."""
        folders: dict[str, list[str]] = {}
        for key in keys:
            if key in BASE_LEVEL_KEYS:
                folders[key] = [key]
            else:
                folders[key] = [f"models/{key}", *LEGACY_SUBFOLDERS.get(key, ())]
        return cls(comfyui_version=comfyui_version, folders=folders)

    @classmethod
    def load(cls, path: Path) -> ModelFolders:
        try:
            return cls.model_validate_json(path.read_text(encoding="utf-8"))
        except (OSError, ValidationError) as exc:
            raise ValueError(f"{path}: not a usable model folder list: {exc}") from None


def read_folders_from_comfyui(comfyui_dir: Path, python: str = sys.executable,
                              timeout: float = 120.0) -> ModelFolders:
    """Ask the ComfyUI checkout itself which model folders it knows (no server, no GPU needed)."""
    # -B: importing must not leave bytecode files inside the checkout.
    result = subprocess.run([python, "-B", "-c", _READ_FOLDERS], cwd=comfyui_dir, capture_output=True,
                            text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"could not read model folders from ComfyUI at {comfyui_dir} with {python}: "
                           f"{result.stderr.strip()[-2000:]}")
    last_line = result.stdout.strip().splitlines()[-1]
    return ModelFolders.model_validate_json(last_line)


def load_folders(settings: Settings) -> ModelFolders:
    """The build-time folder list of the image, or (outside the image) one read from the checkout."""
    path = settings.comfyui_model_folders or settings.comfyui_dir / "model_folders.json"
    if path.is_file():
        return ModelFolders.load(path)
    log.info("no model folder list at %s; asking ComfyUI at %s", path, settings.comfyui_dir)
    return read_folders_from_comfyui(settings.comfyui_dir, settings.comfyui_python)


def volume_config(folders: ModelFolders, volume: Path, *,
                  include_custom_nodes: bool = False) -> dict[str, dict[str, str]]:
    """The extra_model_paths.yaml content for a volume: one section per layout, every folder key mapped.

    Values are ComfyUI's newline-separated path lists, relative to each section's ``base_path``.
    """
    config: dict[str, dict[str, str]] = {}
    for section, sub in VOLUME_LAYOUTS.items():
        base = volume / sub if sub else volume
        entries: dict[str, str] = {"base_path": str(base)}
        for key, paths in folders.folders.items():
            if key in CODE_KEYS and not include_custom_nodes:
                continue
            relative = [p for p in paths if p and not p.startswith("../")] or [f"models/{key}"]
            entries[key] = "\n".join(relative)
        config[section] = entries
    return config


def render_yaml(config: dict[str, dict[str, str]]) -> str:
    header = ("# Generated by the worker: every ComfyUI model folder on the network volume.\n"
              "# Paths are relative to each section's base_path; several paths are separated by newlines.\n")
    return header + yaml.safe_dump(config, sort_keys=False, default_flow_style=False)


def write_volume_config(settings: Settings, dest: Path | None = None,
                        folders: ModelFolders | None = None) -> Path | None:
    """Write the YAML for the mounted volume; None (and nothing written) when no volume is mounted."""
    volume = settings.network_volume_path
    if not volume.is_dir():
        log.info("no network volume at %s", volume)
        return None
    folders = folders or load_folders(settings)
    dest = dest or Path(tempfile.gettempdir()) / "comfy-worker" / "extra_model_paths.volume.yaml"
    dest.parent.mkdir(parents=True, exist_ok=True)
    config = volume_config(folders, volume, include_custom_nodes=settings.network_volume_custom_nodes)
    dest.write_text(render_yaml(config), encoding="utf-8")
    log.info("network volume %s mapped for %d model folders (%s)", volume, len(folders.folders), dest)
    return dest


def volume_model_paths_args(settings: Settings, dest: Path | None = None) -> list[str]:
    """ComfyUI flags that map every model folder onto the mounted network volume (none without one)."""
    generated = write_volume_config(settings, dest)
    return [] if generated is None else ["--extra-model-paths-config", str(generated)]


def model_download_root(settings: Settings) -> Path:
    """Where `start` and `on_demand` models are fetched: the volume when mounted, so others reuse them."""
    if settings.model_download_root is not None:
        return settings.model_download_root
    if settings.network_volume_path.is_dir():
        return settings.network_volume_path / "models"
    return settings.comfyui_dir / "models"
