"""The tiny SD 1.5 checkpoint the real-ComfyUI tests run a sampler with (comfy_worker_dev.tiny_checkpoint)."""

from __future__ import annotations

from pathlib import Path


def test_the_tiny_checkpoint_has_what_comfyui_reads_an_sd15_model_from(tmp_path: Path):
    from safetensors.numpy import load_file

    from comfy_worker_dev.tiny_checkpoint import layout, write_models_folder

    config = write_models_folder(tmp_path / "models")
    checkpoint = tmp_path / "models" / "checkpoints" / "tiny-sd15.safetensors"
    assert f"base_path: {tmp_path / 'models'}" in config.read_text() and checkpoint.stat().st_size < 40_000_000
    tensors = load_file(str(checkpoint))
    assert set(tensors) == set(layout())
    unet = "model.diffusion_model."
    # comfy/model_detection.py: model channels and input channels from the first conv, the context from the
    # first cross-attention; SD 1.5 is 320 channels with a 768 context.
    assert tensors[unet + "input_blocks.0.0.weight"].shape == (320, 4, 3, 3)
    assert tensors[unet + "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"].shape == (320, 768)
    assert tensors["first_stage_model.taesd_decoder.1.weight"].shape == (64, 4, 3, 3)  # ComfyUI's TAESD VAE
    assert all(t.dtype.name in {"float16", "float32"} for t in tensors.values())
