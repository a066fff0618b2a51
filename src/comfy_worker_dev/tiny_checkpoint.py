"""A tiny Stable Diffusion 1.5 checkpoint that ComfyUI loads as SD 1.5, written with numpy (no torch).

`python -m comfy_worker_dev.tiny_checkpoint OUT.safetensors` writes it (about 40 MB) in a second; tests that
need a real ComfyUI running a sampler (`COMFYUI_DIR` set) write one into a temporary models folder and hand
it to ComfyUI through an extra_model_paths YAML (`write_models_folder`). Nothing is downloaded.

How ComfyUI takes it (comfy/model_detection.py and comfy/sd.py of ComfyUI 0.33):
- UNet: the configuration is read from tensor names and shapes. SD 1.5 is recognised by 320 model channels
  and a cross-attention context of 768; everything else (levels, blocks, transformer depth, middle block) is
  free, so this UNet has one level, one input block with one transformer block, no middle block and the
  two output blocks that level implies: 19 M parameters instead of 860 M.
- VAE: a `taesd_decoder.*` state selects ComfyUI's tiny autoencoder (TAESD) in place of the 84 M-parameter
  SD VAE; its encoder and decoder are written whole (2.4 M parameters).
- Text encoder: SD 1.5's CLIP-L has a fixed shape (12 layers, a 49408-token vocabulary). Only its position
  embedding and final layer norm are written; ComfyUI loads the rest as missing weights (it logs "clip
  missing"). Conditioning is then meaningless, which is fine: these tests look at events and files, not at
  what the picture shows.

The weights are random (small, so sampling stays finite); the picture is noise.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .sd_blocks import Shape, collect, conv, linear, norm, res_block, transformer

NAME = "tiny-sd15.safetensors"

_UNET = "model.diffusion_model."
_CLIP = "cond_stage_model.transformer.text_model."
_VAE = "first_stage_model."
_CH = 320          # SD 1.5's model channels: ComfyUI matches on it
_TIME = 4 * _CH
_CONTEXT = 768     # SD 1.5's cross-attention context: ComfyUI matches on it
_TAESD = 64


def _unet() -> Iterator[tuple[str, Shape]]:
    yield from linear(f"{_UNET}time_embed.0", _TIME, _CH)
    yield from linear(f"{_UNET}time_embed.2", _TIME, _TIME)
    yield from conv(f"{_UNET}input_blocks.0.0", _CH, 4)
    yield from res_block(f"{_UNET}input_blocks.1.0", _CH, _CH, _TIME)
    yield from transformer(f"{_UNET}input_blocks.1.1", _CH, _CONTEXT)
    # One level with one res block: two output blocks, each taking a skip connection of the input side.
    for block in (0, 1):
        yield from res_block(f"{_UNET}output_blocks.{block}.0", 2 * _CH, _CH, _TIME)
    yield from norm(f"{_UNET}out.0", _CH)
    yield from conv(f"{_UNET}out.2", 4, _CH)


def _clip() -> Iterator[tuple[str, Shape]]:
    yield f"{_CLIP}embeddings.position_embedding.weight", (77, _CONTEXT)
    yield from norm(f"{_CLIP}final_layer_norm", _CONTEXT)


def _taesd_block(name: str) -> Iterator[tuple[str, Shape]]:
    for i in (0, 2, 4):
        yield from conv(f"{name}.conv.{i}", _TAESD, _TAESD)


def _vae() -> Iterator[tuple[str, Shape]]:
    enc, dec = f"{_VAE}taesd_encoder", f"{_VAE}taesd_decoder"
    # comfy/taesd/taesd.py: Encoder and Decoder are nn.Sequential; these are the indices with weights.
    yield from conv(f"{enc}.0", _TAESD, 3)
    for i in (1, 3, 4, 5, 7, 8, 9, 11, 12, 13):
        yield from _taesd_block(f"{enc}.{i}")
    for i in (2, 6, 10):
        yield from conv(f"{enc}.{i}", _TAESD, _TAESD, bias=False)
    yield from conv(f"{enc}.14", 4, _TAESD)
    yield from conv(f"{dec}.1", _TAESD, 4)
    for i in (3, 4, 5, 8, 9, 10, 13, 14, 15, 18):
        yield from _taesd_block(f"{dec}.{i}")
    for i in (7, 12, 17):
        yield from conv(f"{dec}.{i}", _TAESD, _TAESD, bias=False)
    yield from conv(f"{dec}.19", 3, _TAESD)
    yield f"{_VAE}vae_scale", ()
    yield f"{_VAE}vae_shift", ()


def layout() -> dict[str, Shape]:
    """Every tensor of the tiny checkpoint: name -> shape."""
    return collect(_unet(), _clip(), _vae())


def _value(name: str, shape: Shape, rng: np.random.Generator) -> np.ndarray:
    if name.endswith("vae_scale"):
        return np.ones(shape, dtype=np.float32)
    if name.endswith("vae_shift") or (name.endswith(".bias") and len(shape) == 1):
        return np.zeros(shape, dtype=np.float16)
    if len(shape) == 1:  # every other one-dimensional weight is a norm's scale
        return np.ones(shape, dtype=np.float16)
    fan_in = int(np.prod(shape[1:])) or 1
    return (rng.standard_normal(shape, dtype=np.float32) * (0.5 / np.sqrt(fan_in))).astype(np.float16)


def write_checkpoint(path: Path, *, seed: int = 0) -> Path:
    """Write the checkpoint to `path` (atomically) and return it."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    tensors = {name: _value(name, shape, rng) for name, shape in layout().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    save_file(tensors, str(partial), metadata={"format": "pt", "note": "tiny random SD 1.5 for tests"})
    partial.replace(path)
    return path


def write_models_folder(root: Path, *, seed: int = 0) -> Path:
    """`root/checkpoints/tiny-sd15.safetensors` and `root/extra_model_paths.yaml` naming it; returns the YAML
    (for ComfyUI's `--extra-model-paths-config`, the worker's COMFYUI_EXTRA_MODEL_PATHS)."""
    checkpoint = root / "checkpoints" / NAME
    if not checkpoint.is_file():
        write_checkpoint(checkpoint, seed=seed)
    config = root / "extra_model_paths.yaml"
    config.write_text(f"tiny:\n    base_path: {root}\n    checkpoints: checkpoints/\n")
    return config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m comfy_worker_dev.tiny_checkpoint", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="the .safetensors file to write")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    path = write_checkpoint(args.out, seed=args.seed)
    params = sum(int(np.prod(s)) for s in layout().values())
    sys.stdout.write(json.dumps({"path": str(path), "tensors": len(layout()), "parameters": params,
                                 "bytes": path.stat().st_size}) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
