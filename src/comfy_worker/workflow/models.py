"""Which node inputs name model files, and in which model folder (``GET /models/{folder}``)."""

from __future__ import annotations

import difflib
from typing import Any

from .catalogue import InputSpec

# Input names that always name a file of one model folder (core and common custom nodes).
INPUT_FOLDERS: dict[str, str] = {
    "ckpt_name": "checkpoints",
    "lora_name": "loras",
    "vae_name": "vae",
    "unet_name": "diffusion_models",
    "clip_name": "text_encoders",
    "clip_name1": "text_encoders",
    "clip_name2": "text_encoders",
    "clip_name3": "text_encoders",
    "clip_name4": "text_encoders",
    "text_encoder": "text_encoders",
    "control_net_name": "controlnet",
    "style_model_name": "style_models",
    "gligen_name": "gligen",
    "hypernetwork_name": "hypernetworks",
    "photomaker_model_name": "photomaker",
    "audio_encoder_name": "audio_encoders",
    "model_patch_name": "model_patches",
    "bg_removal_name": "background_removal",
}
# Names that are model files only on particular nodes (the same name means other things elsewhere).
CLASS_INPUT_FOLDERS: dict[tuple[str, str], str] = {
    ("UpscaleModelLoader", "model_name"): "upscale_models",
    ("CLIPVisionLoader", "clip_name"): "clip_vision",
    ("LatentUpscaleModelLoader", "model_name"): "latent_upscale_models",
    ("DiffusersLoader", "model_path"): "diffusers",
    ("CheckpointLoader", "config_name"): "configs",
    ("LoadMoGeModel", "model_name"): "geometry_estimation",
    ("LoadDA3Model", "model_name"): "geometry_estimation",
    ("ModelPatchLoader", "name"): "model_patches",
    ("FrameInterpolationModelLoader", "model_name"): "frame_interpolation",
    ("OpticalFlowLoader", "model_name"): "optical_flow",
}
# Legacy folder names ComfyUI still accepts.
FOLDER_ALIASES = {"clip": "text_encoders", "unet": "diffusion_models"}


def model_folder(class_type: str, spec: InputSpec, models: dict[str, list[str]] | None) -> str | None:
    """The model folder a combo input's value lives in, or None when it is not a model file input."""
    if not spec.is_combo:
        return None
    base = spec.name.rsplit(".", 1)[-1]
    folder = CLASS_INPUT_FOLDERS.get((class_type, base)) or INPUT_FOLDERS.get(base)
    if folder is not None:
        return folder
    if models:
        options = spec.combo_options
        if options:
            option_set = set(options)
            for name, files in models.items():
                if files and option_set == set(files):
                    return FOLDER_ALIASES.get(name, name)
    return None


def folder_files(models: dict[str, list[str]], folder: str) -> list[str] | None:
    if folder in models:
        return models[folder]
    for alias, target in FOLDER_ALIASES.items():
        if target == folder and alias in models:
            return models[alias]
    return None


def closest(name: str, available: list[str], count: int = 3) -> list[str]:
    """The available files whose names look most like the missing one."""
    if not available:
        return []
    by_base = {f.rsplit("/", 1)[-1]: f for f in available}
    hits = difflib.get_close_matches(str(name).rsplit("/", 1)[-1], list(by_base), n=count, cutoff=0.4)
    return [by_base[h] for h in hits]


def describe(value: Any) -> str:
    return value if isinstance(value, str) else repr(value)
