"""Write an SD 1.5 checkpoint of random fp16 weights (real names and shapes, about 2.1 GB).

Run in ComfyUI's interpreter (it has torch and safetensors):

    COMFYUI_PYTHON benchmarks/gpu/make_checkpoint.py OUT.safetensors [--seed N]

Prints one JSON line: path, tensor count, parameters, bytes, seconds. The weights are small (std 0.02),
norm scales are one and biases zero, so sampling and decoding stay finite in fp16; the picture is noise.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from sd15_layout import parameter_count, sd15_layout  # noqa: E402


def _is_norm_scale(name: str, shape: tuple[int, ...]) -> bool:
    # In this layout every one-dimensional `.weight` is the scale of a GroupNorm or LayerNorm.
    return len(shape) == 1 and name.endswith(".weight")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    started = time.monotonic()
    torch.manual_seed(args.seed)
    layout = sd15_layout()
    tensors = {}
    for name, shape in layout.items():
        if _is_norm_scale(name, shape):
            tensors[name] = torch.ones(shape, dtype=torch.float16)
        elif name.endswith(".bias"):
            tensors[name] = torch.zeros(shape, dtype=torch.float16)
        else:
            tensors[name] = (torch.randn(shape, dtype=torch.float32) * 0.02).to(torch.float16)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    partial = args.out.with_suffix(".partial")
    save_file(tensors, str(partial), metadata={"format": "pt", "note": "random weights for benchmarks"})
    os.replace(partial, args.out)
    print(json.dumps({"path": str(args.out), "tensors": len(layout), "parameters": parameter_count(layout),
                      "bytes": args.out.stat().st_size, "seconds": round(time.monotonic() - started, 3)}))


if __name__ == "__main__":
    main()
