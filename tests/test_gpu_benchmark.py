"""The pure parts of benchmarks/gpu_run.py: the SD 1.5 checkpoint layout (checked against ComfyUI's own
model detection and modules when a real ComfyUI is available), the result JSON and its Markdown."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from .scriptmodules import load_script
from .workerkit import real_comfyui

ROOT = Path(__file__).resolve().parents[1]


layout = load_script(ROOT / "benchmarks/gpu/sd15_layout.py")
gpu_run = load_script(ROOT / "benchmarks/gpu_run.py")


def test_layout_has_the_parameter_counts_of_sd15() -> None:
    tensors = layout.sd15_layout()

    def count(prefix: str) -> int:
        return layout.parameter_count({k: v for k, v in tensors.items() if k.startswith(prefix)})

    assert count(layout.UNET_PREFIX) == 859_520_964
    assert count(layout.CLIP_PREFIX) == 123_060_480
    assert count(layout.VAE_PREFIX) == 83_653_863
    assert len(tensors) == 1130


def test_layout_names_the_tensors_comfyui_detection_reads() -> None:
    tensors = layout.sd15_layout()
    unet = layout.UNET_PREFIX
    # detect_unet_config reads these to tell SD 1.5 from its relatives
    assert tensors[f"{unet}input_blocks.0.0.weight"] == (320, 4, 3, 3)
    assert tensors[f"{unet}input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"] == (320, 768)
    assert tensors[f"{unet}input_blocks.1.1.proj_in.weight"] == (320, 320, 1, 1)  # conv, not linear
    assert f"{unet}label_emb.0.0.weight" not in tensors
    assert tensors[f"{unet}output_blocks.2.1.conv.weight"] == (1280, 1280, 3, 3)
    assert tensors[f"{unet}output_blocks.5.2.conv.weight"] == (1280, 1280, 3, 3)
    assert not any(k.startswith(f"{unet}output_blocks.11.2") for k in tensors)
    assert tensors[f"{layout.CLIP_PREFIX}embeddings.token_embedding.weight"] == (49408, 768)
    assert tensors["first_stage_model.encoder.conv_out.weight"] == (8, 512, 3, 3)
    assert tensors["first_stage_model.post_quant_conv.weight"] == (4, 4, 1, 1)


@pytest.mark.real_comfyui
@pytest.mark.skipif(real_comfyui() is None, reason="COMFYUI_DIR is not set")
def test_layout_matches_what_comfyui_builds() -> None:
    found = real_comfyui()
    assert found is not None
    comfy_dir, python = found
    proc = subprocess.run([python, str(ROOT / "benchmarks/gpu/check_layout.py"), str(comfy_dir)],
                          cwd=comfy_dir, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["model_class"] == "SD15"
    empty = {"missing": [], "unexpected": [], "wrong_shape": []}
    assert report["unet"] == empty
    assert report["clip"] == empty
    assert report["vae"] == empty


def test_workflow_is_the_text_to_image_graph() -> None:
    graph = gpu_run.txt2img_workflow(512, 20, 5, batch=3)
    types = sorted(node["class_type"] for node in graph.values())
    assert types == sorted(["CheckpointLoaderSimple", "CLIPTextEncode", "CLIPTextEncode", "EmptyLatentImage",
                            "KSampler", "VAEDecode", "SaveImage"])
    assert graph["5"]["inputs"] == {"width": 512, "height": 512, "batch_size": 3}
    assert graph["3"]["inputs"]["steps"] == 20 and graph["3"]["inputs"]["seed"] == 5
    assert graph["4"]["inputs"]["ckpt_name"] == gpu_run.CHECKPOINT


def _result() -> dict:
    results = gpu_run.Results({"date": "2026-01-02", "machine": {"device": "cuda:0 NVIDIA H100 80GB HBM3 : cudaMallocAsync",
                                                                 "device_type": "cuda", "comfyui_version": "0.33.0"},
                               "parameters": {"size": 512, "steps": 20, "runs": 5, "cold_runs": 3}})
    results.set("cold_start_comfyui_s", 4.25, [4.0, 4.25, 5.0])
    results.set("worker_overhead_ratio", 1.02)
    results.set("job_after_oom_ok", True)
    results.set("oom_error_code", "OUT_OF_MEMORY", note="KSampler ran out | of memory")
    results.missing("cancel_to_queue_empty_s", "stopped early: budget")
    return results.to_json()


def test_result_json_names_every_figure_and_never_fills_a_gap() -> None:
    data = json.loads(json.dumps(_result()))
    assert set(data["figures"]) == set(gpu_run.FIGURES)
    assert data["figures"]["cold_start_comfyui_s"] == {"value": 4.25, "unit": "s", "reason": None,
                                                       "samples": [4.0, 4.25, 5.0]}
    assert data["figures"]["cancel_to_queue_empty_s"]["value"] is None
    assert data["figures"]["cancel_to_queue_empty_s"]["reason"] == "stopped early: budget"
    assert data["figures"]["first_job_s"] == {"value": None, "unit": "s", "reason": "not reached"}
    for name, entry in data["figures"].items():
        assert (entry["value"] is None) == (entry["reason"] is not None), name


def test_a_missing_reason_never_overwrites_a_measured_value() -> None:
    results = gpu_run.Results({})
    results.set("first_job_s", 3.5)
    results.missing("first_job_s", "failed: later part")
    assert results.to_json()["figures"]["first_job_s"]["value"] == 3.5


def test_markdown_has_one_row_per_figure_with_reasons() -> None:
    text = gpu_run.render_markdown(_result())
    assert text.startswith("### Measured on cuda:0 NVIDIA H100 80GB HBM3 : cudaMallocAsync (GPU), 2026-01-02")
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| Figure")]
    assert len(rows) == len(gpu_run.FIGURES)
    assert "| 4.250 s | samples: 4, 4.25, 5 |" in text
    assert "| 1.02× |" in text
    assert "| yes |" in text
    assert "KSampler ran out / of memory" in text  # a pipe in a note would break the table
    assert "| — | stopped early: budget |" in text
    assert "ComfyUI 0.33.0" in text


def test_cpu_run_marks_gpu_figures_not_measured() -> None:
    results = gpu_run.Results({})
    for name in gpu_run.GPU_ONLY:
        results.missing(name, gpu_run.NOT_ON_CPU)
    figures = results.to_json()["figures"]
    assert {n for n, e in figures.items() if e["reason"] == gpu_run.NOT_ON_CPU} == gpu_run.GPU_ONLY


def test_median_of_samples() -> None:
    assert gpu_run.median([3.0, 1.0, 2.0]) == 2.0
    assert gpu_run.median([1.0, 2.0]) == 1.5
