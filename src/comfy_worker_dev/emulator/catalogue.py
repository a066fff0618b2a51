"""The node catalogue (captured /object_info) and the folders the emulator serves files from.

Model-file combos (`ckpt_name` …) are listed from the files present at request time, like the real
server, instead of from the captured list.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger(__name__)

# ComfyUI 0.33.0's /object_info as recorded from a real server (tests read it too).
OBJECT_INFO_PATH = Path(__file__).resolve().with_name("data") / "object_info.json"

MODEL_FOLDERS: tuple[str, ...] = (
    "checkpoints", "configs", "loras", "vae", "text_encoders", "diffusion_models", "clip_vision",
    "style_models", "embeddings", "diffusers", "vae_approx", "controlnet", "gligen", "upscale_models",
    "latent_upscale_models", "custom_nodes", "datasets", "hypernetworks", "photomaker", "classifiers",
    "model_patches", "audio_encoders", "background_removal", "frame_interpolation", "geometry_estimation",
    "optical_flow", "detection",
)
# Default sub-folders under <base>/models/ where they differ from the key (legacy names first).
_DEFAULT_DIRS: dict[str, tuple[str, ...]] = {
    "text_encoders": ("text_encoders", "clip"),
    "diffusion_models": ("unet", "diffusion_models"),
    "controlnet": ("controlnet", "t2i_adapter"),
}
_LEGACY_KEYS = {"unet": "diffusion_models", "clip": "text_encoders"}
PT_EXTENSIONS = frozenset({".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"})
_ANY_EXTENSION_FOLDERS = frozenset({"custom_nodes", "classifiers", "diffusers", "datasets"})

# Inputs whose combo lists model files, by input name; only for core (non partner-API) nodes.
_MODEL_INPUTS: dict[str, str] = {
    "ckpt_name": "checkpoints", "lora_name": "loras", "vae_name": "vae", "control_net_name": "controlnet",
    "unet_name": "diffusion_models", "clip_name": "text_encoders", "clip_name1": "text_encoders",
    "clip_name2": "text_encoders", "clip_name3": "text_encoders", "clip_name4": "text_encoders",
    "style_model_name": "style_models", "gligen_name": "gligen", "config_name": "configs",
}
_MODEL_INPUTS_BY_CLASS: dict[tuple[str, str], str] = {
    ("UpscaleModelLoader", "model_name"): "upscale_models",
    ("CLIPVisionLoader", "clip_name"): "clip_vision",
    ("HypernetworkLoader", "hypernetwork_name"): "hypernetworks",
    ("PhotoMakerLoader", "photomaker_model_name"): "photomaker",
}
_IMAGE_INPUT_CLASSES = frozenset({"LoadImage", "LoadImageMask"})
_IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"})


@lru_cache(maxsize=1)
def load_object_info() -> dict[str, Any]:
    with OBJECT_INFO_PATH.open("rb") as f:
        return json.load(f)


@dataclass
class Folders:
    """Where the emulator reads and writes files, resolved the way ComfyUI resolves its flags."""

    base: Path
    input: Path
    output: Path
    temp: Path
    extra_model_paths: dict[str, list[Path]] = field(default_factory=dict)

    def by_type(self, kind: str | None) -> Path | None:
        return {"input": self.input, "output": self.output, "temp": self.temp}.get(kind or "output")

    def model_dirs(self, folder: str) -> list[Path]:
        folder = _LEGACY_KEYS.get(folder, folder)
        if folder == "custom_nodes":
            dirs = [self.base / "custom_nodes"]
        else:
            dirs = [self.base / "models" / d for d in _DEFAULT_DIRS.get(folder, (folder,))]
        return dirs + self.extra_model_paths.get(folder, [])

    def model_keys(self) -> list[str]:
        return list(MODEL_FOLDERS) + [k for k in self.extra_model_paths if k not in MODEL_FOLDERS]

    def list_models(self, folder: str) -> list[str] | None:
        """Relative `/`-separated file paths, sorted; None for an unknown key."""
        if folder not in self.model_keys():
            return None
        found: set[str] = set()
        for root in self.model_dirs(folder):
            if not root.is_dir():
                continue
            for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
                dirnames[:] = [d for d in dirnames if d != ".git"]
                for name in filenames:
                    if not _extension_ok(folder, name):
                        continue
                    rel = os.path.relpath(os.path.join(dirpath, name), root)
                    found.add(rel.replace(os.sep, "/"))
        return sorted(found)

    def list_input_images(self) -> list[str]:
        if not self.input.is_dir():
            return []
        return sorted(p.name for p in self.input.iterdir()
                      if p.is_file() and p.suffix.lower() in _IMAGE_EXTENSIONS)

    def annotated_path(self, name: str, default: Path | None = None) -> Path | None:
        """Resolve `"x.png [output]"` / `"sub/x.png"`; None when it escapes its folder."""
        base = default or self.input
        for suffix, folder in ((" [output]", self.output), (" [input]", self.input), (" [temp]", self.temp)):
            if name.endswith(suffix.strip()):
                name, base = name[: -len(suffix)], folder
                break
        path = Path(os.path.abspath(base / name))
        if not _within(base, path):
            return None
        return path


def _extension_ok(folder: str, name: str) -> bool:
    ext = os.path.splitext(name)[1].lower()
    if folder == "configs":
        return ext == ".yaml"
    if folder in _ANY_EXTENSION_FOLDERS or folder not in MODEL_FOLDERS:
        return True
    return ext in PT_EXTENSIONS


def _within(base: Path, path: Path) -> bool:
    base_s = os.path.abspath(base)
    return os.path.commonpath((base_s, os.path.abspath(path))) == base_s


def load_extra_model_paths(config_files: list[Path]) -> dict[str, list[Path]]:
    """Read extra_model_paths.yaml files (§A13.2 of the protocol notes)."""
    out: dict[str, list[Path]] = {}
    for cfg in config_files:
        with open(cfg, encoding="utf-8") as f:
            doc = yaml.safe_load(f) or {}
        for section in doc.values():
            if section is None:
                continue
            base = section.get("base_path")
            if base:
                base = os.path.expandvars(os.path.expanduser(str(base)))
                if not os.path.isabs(base):
                    base = os.path.join(os.path.dirname(os.path.abspath(cfg)), base)
            for key, value in section.items():
                if key in ("base_path", "is_default"):
                    continue
                key = _LEGACY_KEYS.get(key, key)
                for line in str(value).split("\n"):
                    line = line.strip()
                    if not line:
                        continue
                    full = os.path.join(base, line) if base else os.path.join(os.path.dirname(
                        os.path.abspath(cfg)), os.path.expandvars(os.path.expanduser(line)))
                    paths = out.setdefault(key, [])
                    if Path(os.path.normpath(full)) not in paths:
                        paths.append(Path(os.path.normpath(full)))
    return out


class Catalogue:
    """Node definitions plus the live file lists that some of their combos depend on."""

    def __init__(self, folders: Folders) -> None:
        self.folders = folders
        self._info = load_object_info()

    def has(self, class_type: Any) -> bool:
        return isinstance(class_type, str) and class_type in self._info

    def info(self, class_type: str) -> dict[str, Any]:
        return self._info[class_type]

    def is_output_node(self, class_type: str) -> bool:
        return self._info[class_type].get("output_node") is True

    def return_types(self, class_type: str) -> tuple[Any, ...]:
        # A tuple so an out-of-range slot raises the same IndexError text as the real server.
        return tuple(self._info[class_type].get("output", []))

    def model_folder_for(self, class_type: str, input_name: str) -> str | None:
        folder = _MODEL_INPUTS_BY_CLASS.get((class_type, input_name))
        if folder is not None:
            return folder
        module = self._info[class_type].get("python_module", "")
        if module.startswith("comfy_api_nodes"):
            return None
        return _MODEL_INPUTS.get(input_name)

    def live_combo(self, class_type: str, input_name: str, captured: list[Any]) -> list[Any] | None:
        """The combo list as the real server would build it now, or None when it is static."""
        if class_type in _IMAGE_INPUT_CLASSES and input_name == "image":
            return self.folders.list_input_images()
        folder = self.model_folder_for(class_type, input_name)
        if folder is None:
            return None
        files = self.folders.list_models(folder) or []
        # Keep captured entries that are not files (e.g. VAELoader's built-in decoders).
        extras = [v for v in captured if isinstance(v, str) and not os.path.splitext(v)[1]]
        return files + [v for v in extras if v not in files]

    def input_defs(self, class_type: str) -> dict[str, dict[str, list[Any]]]:
        """{"required": {...}, "optional": {...}} with live combos filled in."""
        raw = self._info[class_type].get("input", {})
        out: dict[str, dict[str, list[Any]]] = {}
        for category in ("required", "optional"):
            entries = raw.get(category) or {}
            fixed: dict[str, list[Any]] = {}
            for name, entry in entries.items():
                fixed[name] = self._live_entry(class_type, name, entry)
            out[category] = fixed
        return out

    def _live_entry(self, class_type: str, name: str, entry: list[Any]) -> list[Any]:
        if not entry:
            return entry
        typ = entry[0]
        if isinstance(typ, list):
            live = self.live_combo(class_type, name, typ)
            if live is not None:
                return [live, *entry[1:]]
        elif typ == "COMBO" and len(entry) > 1 and isinstance(entry[1], dict):
            live = self.live_combo(class_type, name, entry[1].get("options", []))
            if live is not None:
                opts = dict(entry[1])
                opts["options"] = live
                return [typ, opts]
        return entry

    def object_info(self, class_type: str | None = None) -> dict[str, Any]:
        names = [class_type] if class_type else list(self._info)
        out: dict[str, Any] = {}
        for name in names:
            if name not in self._info:
                continue
            info = self._info[name]
            if self._has_live_inputs(name):
                info = copy.deepcopy(info)
                for category, fixed in self.input_defs(name).items():
                    if category in info.get("input", {}):
                        info["input"][category].update(fixed)
            out[name] = info
        return out

    def _has_live_inputs(self, class_type: str) -> bool:
        raw = self._info[class_type].get("input", {})
        for category in ("required", "optional"):
            for name in raw.get(category) or {}:
                if class_type in _IMAGE_INPUT_CLASSES and name == "image":
                    return True
                if self.model_folder_for(class_type, name) is not None:
                    return True
        return False
