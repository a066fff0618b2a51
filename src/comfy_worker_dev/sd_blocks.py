"""Tensor names and shapes of the building blocks of a Stable Diffusion 1.x UNet, in the original LDM naming
ComfyUI's model detection reads. Pure Python with no imports beyond the standard library: the tiny test
checkpoint (`tiny_checkpoint`) and the GPU benchmark's full-size SD 1.5 (`benchmarks/gpu/sd15_layout.py`, run
on a machine with only the image's Python) are both built from these."""

from __future__ import annotations

from collections.abc import Iterator

Shape = tuple[int, ...]
Tensors = Iterator[tuple[str, Shape]]


def collect(*parts: Tensors) -> dict[str, Shape]:
    """A checkpoint's tensors from its parts, name -> shape; a name given twice is a mistake in a layout."""
    found: dict[str, Shape] = {}
    for part in parts:
        for name, shape in part:
            if name in found:
                raise AssertionError(f"duplicate tensor {name}")
            found[name] = shape
    return found


def norm(name: str, ch: int) -> Tensors:
    yield f"{name}.weight", (ch,)
    yield f"{name}.bias", (ch,)


def conv(name: str, out: int, inp: int, k: int = 3, bias: bool = True) -> Tensors:
    yield f"{name}.weight", (out, inp, k, k)
    if bias:
        yield f"{name}.bias", (out,)


def linear(name: str, out: int, inp: int, bias: bool = True) -> Tensors:
    yield f"{name}.weight", (out, inp)
    if bias:
        yield f"{name}.bias", (out,)


def res_block(name: str, inp: int, out: int, time_dim: int) -> Tensors:
    """A UNet ResBlock with its timestep embedding; a skip convolution when the channels change."""
    yield from norm(f"{name}.in_layers.0", inp)
    yield from conv(f"{name}.in_layers.2", out, inp)
    yield from linear(f"{name}.emb_layers.1", out, time_dim)
    yield from norm(f"{name}.out_layers.0", out)
    yield from conv(f"{name}.out_layers.3", out, out)
    if inp != out:
        yield from conv(f"{name}.skip_connection", out, inp, 1)


def transformer(name: str, ch: int, context_dim: int) -> Tensors:
    """A SpatialTransformer of one block: self- and cross-attention (keys and values from the text context)."""
    yield from norm(f"{name}.norm", ch)
    yield from conv(f"{name}.proj_in", ch, ch, 1)
    block = f"{name}.transformer_blocks.0"
    for attn, kv_dim in (("attn1", ch), ("attn2", context_dim)):
        yield from linear(f"{block}.{attn}.to_q", ch, ch, bias=False)
        yield from linear(f"{block}.{attn}.to_k", ch, kv_dim, bias=False)
        yield from linear(f"{block}.{attn}.to_v", ch, kv_dim, bias=False)
        yield from linear(f"{block}.{attn}.to_out.0", ch, ch)
    yield from linear(f"{block}.ff.net.0.proj", ch * 8, ch)  # GEGLU: two halves of 4 * ch
    yield from linear(f"{block}.ff.net.2", ch, ch * 4)
    for i in (1, 2, 3):
        yield from norm(f"{block}.norm{i}", ch)
    yield from conv(f"{name}.proj_out", ch, ch, 1)
