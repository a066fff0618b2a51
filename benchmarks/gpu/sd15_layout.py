"""Tensor names and shapes of a Stable Diffusion 1.5 checkpoint, in the original LDM naming that ComfyUI's
model detection reads (``model.diffusion_model.*``, ``cond_stage_model.transformer.text_model.*``,
``first_stage_model.*``).

Pure Python (no torch): the benchmark writes random weights in these shapes so that ComfyUI loads, detects
and runs a model of real size without any download. About 1.07 billion parameters, 2.1 GB in fp16.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

# The blocks are shared with the tiny test checkpoint; src/comfy_worker_dev/sd_blocks.py needs nothing installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

from comfy_worker_dev.sd_blocks import Shape, collect, conv, linear, norm, res_block, transformer  # noqa: E402

UNET_PREFIX = "model.diffusion_model."
CLIP_PREFIX = "cond_stage_model.transformer.text_model."
VAE_PREFIX = "first_stage_model."

_MODEL_CH = 320
_CH_MULT = (1, 2, 4, 4)
_ATTENTION_LEVELS = (0, 1, 2)
_RES_BLOCKS = 2
_TIME_DIM = 4 * _MODEL_CH
_CONTEXT_DIM = 768
_CLIP_LAYERS = 12
_CLIP_VOCAB = 49408
_CLIP_POSITIONS = 77
_VAE_CH = 128
_VAE_CH_MULT = (1, 2, 4, 4)


def unet_layout() -> Iterator[tuple[str, Shape]]:
    p = UNET_PREFIX
    yield from linear(f"{p}time_embed.0", _TIME_DIM, _MODEL_CH)
    yield from linear(f"{p}time_embed.2", _TIME_DIM, _TIME_DIM)
    yield from conv(f"{p}input_blocks.0.0", _MODEL_CH, 4)
    skips = [_MODEL_CH]
    ch, block = _MODEL_CH, 1
    for level, mult in enumerate(_CH_MULT):
        for _ in range(_RES_BLOCKS):
            out = _MODEL_CH * mult
            yield from res_block(f"{p}input_blocks.{block}.0", ch, out, _TIME_DIM)
            ch = out
            if level in _ATTENTION_LEVELS:
                yield from transformer(f"{p}input_blocks.{block}.1", ch, _CONTEXT_DIM)
            skips.append(ch)
            block += 1
        if level != len(_CH_MULT) - 1:
            yield from conv(f"{p}input_blocks.{block}.0.op", ch, ch)
            skips.append(ch)
            block += 1
    yield from res_block(f"{p}middle_block.0", ch, ch, _TIME_DIM)
    yield from transformer(f"{p}middle_block.1", ch, _CONTEXT_DIM)
    yield from res_block(f"{p}middle_block.2", ch, ch, _TIME_DIM)
    block = 0
    for level, mult in reversed(list(enumerate(_CH_MULT))):
        for i in range(_RES_BLOCKS + 1):
            out = _MODEL_CH * mult
            yield from res_block(f"{p}output_blocks.{block}.0", ch + skips.pop(), out, _TIME_DIM)
            ch = out
            index = 1
            if level in _ATTENTION_LEVELS:
                yield from transformer(f"{p}output_blocks.{block}.1", ch, _CONTEXT_DIM)
                index = 2
            if level and i == _RES_BLOCKS:
                yield from conv(f"{p}output_blocks.{block}.{index}.conv", ch, ch)
            block += 1
    yield from norm(f"{p}out.0", ch)
    yield from conv(f"{p}out.2", 4, ch)


def clip_layout() -> Iterator[tuple[str, Shape]]:
    p, d = CLIP_PREFIX, _CONTEXT_DIM
    yield f"{p}embeddings.token_embedding.weight", (_CLIP_VOCAB, d)
    yield f"{p}embeddings.position_embedding.weight", (_CLIP_POSITIONS, d)
    for layer in range(_CLIP_LAYERS):
        name = f"{p}encoder.layers.{layer}"
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            yield from linear(f"{name}.self_attn.{proj}", d, d)
        yield from norm(f"{name}.layer_norm1", d)
        yield from linear(f"{name}.mlp.fc1", 4 * d, d)
        yield from linear(f"{name}.mlp.fc2", d, 4 * d)
        yield from norm(f"{name}.layer_norm2", d)
    yield from norm(f"{p}final_layer_norm", d)


def _vae_res(name: str, inp: int, out: int) -> Iterator[tuple[str, Shape]]:
    yield from norm(f"{name}.norm1", inp)
    yield from conv(f"{name}.conv1", out, inp)
    yield from norm(f"{name}.norm2", out)
    yield from conv(f"{name}.conv2", out, out)
    if inp != out:
        yield from conv(f"{name}.nin_shortcut", out, inp, 1)


def _vae_mid(name: str, ch: int) -> Iterator[tuple[str, Shape]]:
    yield from _vae_res(f"{name}.block_1", ch, ch)
    yield from norm(f"{name}.attn_1.norm", ch)
    for proj in ("q", "k", "v", "proj_out"):
        yield from conv(f"{name}.attn_1.{proj}", ch, ch, 1)
    yield from _vae_res(f"{name}.block_2", ch, ch)


def vae_layout() -> Iterator[tuple[str, Shape]]:
    p = VAE_PREFIX
    enc, ch = f"{p}encoder", _VAE_CH
    yield from conv(f"{enc}.conv_in", ch, 3)
    for level, mult in enumerate(_VAE_CH_MULT):
        out = _VAE_CH * mult
        for i in range(_RES_BLOCKS):
            yield from _vae_res(f"{enc}.down.{level}.block.{i}", ch, out)
            ch = out
        if level != len(_VAE_CH_MULT) - 1:
            yield from conv(f"{enc}.down.{level}.downsample.conv", ch, ch)
    yield from _vae_mid(f"{enc}.mid", ch)
    yield from norm(f"{enc}.norm_out", ch)
    yield from conv(f"{enc}.conv_out", 8, ch)  # double_z: mean and log-variance of 4 latent channels
    dec = f"{p}decoder"
    yield from conv(f"{dec}.conv_in", ch, 4)
    yield from _vae_mid(f"{dec}.mid", ch)
    for level in reversed(range(len(_VAE_CH_MULT))):
        out = _VAE_CH * _VAE_CH_MULT[level]
        for i in range(_RES_BLOCKS + 1):
            yield from _vae_res(f"{dec}.up.{level}.block.{i}", ch, out)
            ch = out
        if level:
            yield from conv(f"{dec}.up.{level}.upsample.conv", ch, ch)
    yield from norm(f"{dec}.norm_out", ch)
    yield from conv(f"{dec}.conv_out", 3, ch)
    yield from conv(f"{p}quant_conv", 8, 8, 1)
    yield from conv(f"{p}post_quant_conv", 4, 4, 1)


def sd15_layout() -> dict[str, Shape]:
    """Every tensor of an SD 1.5 checkpoint: name -> shape."""
    return collect(unet_layout(), clip_layout(), vae_layout())


def parameter_count(layout: dict[str, Shape]) -> int:
    total = 0
    for shape in layout.values():
        n = 1
        for dim in shape:
            n *= dim
        total += n
    return total
