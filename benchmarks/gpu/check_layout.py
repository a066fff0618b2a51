"""Compare the SD 1.5 layout with what ComfyUI itself builds. Run in ComfyUI's interpreter:

    COMFYUI_PYTHON benchmarks/gpu/check_layout.py COMFYUI_DIR

Prints one JSON object: the model class ComfyUI's detection picks from the UNet keys, and for the UNet, the
text encoder and the VAE, the tensors ComfyUI's own modules expect that the layout lacks, has extra, or
shapes differently. Nothing is allocated: ComfyUI's modules are built on the meta device.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, sys.argv[1])
sys.argv = sys.argv[:1] + ["--cpu"]  # ComfyUI parses its flags at import time

import torch  # noqa: E402

import comfy.options  # noqa: E402

comfy.options.enable_args_parsing()

from sd15_layout import CLIP_PREFIX, UNET_PREFIX, VAE_PREFIX, sd15_layout  # noqa: E402

import comfy.model_detection  # noqa: E402,I001
import comfy.ops  # noqa: E402
from comfy.ldm.models.autoencoder import AutoencoderKL  # noqa: E402
from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel  # noqa: E402

# Tensors ComfyUI's CLIP module has that SD 1.5 checkpoints do not carry (ComfyUI fills them itself).
CLIP_NOT_IN_CHECKPOINTS = {"clip_l.transformer.text_projection.weight", "clip_l.logit_scale"}


def compare(expected: dict[str, tuple[int, ...]], ours: dict[str, tuple[int, ...]]) -> dict[str, list]:
    return {
        "missing": sorted(set(expected) - set(ours)),
        "unexpected": sorted(set(ours) - set(expected)),
        "wrong_shape": sorted([k, list(ours[k]), list(expected[k])] for k in set(ours) & set(expected)
                              if tuple(ours[k]) != tuple(expected[k])),
    }


def shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def main() -> None:
    logging.disable(logging.WARNING)
    layout = sd15_layout()
    sd = {k: torch.empty(shape, dtype=torch.float16, device="meta") for k, shape in layout.items()}
    config = comfy.model_detection.model_config_from_unet(sd, UNET_PREFIX)
    report: dict[str, object] = {"model_class": type(config).__name__ if config else None}
    if config is None:
        print(json.dumps(report))
        return
    unet_config = {k: v for k, v in config.unet_config.items() if k not in {"disable_unet_model_creation"}}
    with torch.device("meta"):
        unet = UNetModel(**unet_config, device="meta", operations=comfy.ops.disable_weight_init)
    report["unet"] = compare(shapes(unet), {k[len(UNET_PREFIX):]: v for k, v in layout.items()
                                            if k.startswith(UNET_PREFIX)})
    clip_sd = config.process_clip_state_dict({k: v for k, v in sd.items() if k.startswith("cond_stage_model.")})
    target = config.clip_target()
    with torch.device("meta"):
        clip = target.clip(device="meta", dtype=torch.float16)
    expected_clip = {k: v for k, v in shapes(clip).items() if k not in CLIP_NOT_IN_CHECKPOINTS}
    report["clip"] = compare(expected_clip, {k: tuple(v.shape) for k, v in clip_sd.items()})
    report["clip_prefix_seen"] = any(k.startswith(CLIP_PREFIX) for k in layout)
    ddconfig = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
                "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}
    with torch.device("meta"):
        vae = AutoencoderKL(ddconfig=ddconfig, embed_dim=4)
    report["vae"] = compare(shapes(vae), {k[len(VAE_PREFIX):]: v for k, v in layout.items()
                                          if k.startswith(VAE_PREFIX)})
    print(json.dumps(report))


if __name__ == "__main__":
    main()
