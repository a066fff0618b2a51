"""Network volume mapping: every ComfyUI model folder, in the format ComfyUI's loader reads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from comfy_worker.models.volume import (
    CODE_KEYS,
    ModelFolders,
    volume_model_paths_args,
    model_download_root,
    read_folders_from_comfyui,
    volume_config,
    write_volume_config,
)
from comfy_worker.comfy.process import comfyui_command
from comfy_worker_build.volume import main
from comfy_worker.settings import Settings

FIXTURES = Path(__file__).parent / "fixtures" / "comfyui"
MODEL_KEYS: list[str] = json.loads((FIXTURES / "models_list.json").read_text())["json"]


def _comfyui_loader_semantics(config: dict, yaml_dir: Path) -> dict[str, list[str]]:
    """What ComfyUI's `load_extra_path_config` adds for a config (protocols.md §A13.2), strictly."""
    added: dict[str, list[str]] = {}
    for section, conf in config.items():
        if conf is None:
            continue
        conf = dict(conf)
        base = conf.pop("base_path", None)
        conf.pop("is_default", None)
        assert base is None or isinstance(base, str), section
        for key, value in conf.items():
            assert isinstance(value, str), f"{section}.{key} must be a string of newline-separated paths"
            for line in value.split("\n"):
                if not line:
                    continue
                full = os.path.join(base, line) if base else os.path.join(yaml_dir, line)
                added.setdefault(key, []).append(os.path.normpath(full))
    return added


def test_every_comfyui_model_folder_is_mapped_in_both_layouts(tmp_path: Path) -> None:
    folders = ModelFolders.from_keys(MODEL_KEYS)
    config = yaml.safe_load(yaml.safe_dump(volume_config(folders, Path("/runpod-volume"))))
    added = _comfyui_loader_semantics(config, tmp_path)
    assert CODE_KEYS == {"custom_nodes"}
    assert set(added) == set(MODEL_KEYS) - CODE_KEYS
    for key in set(MODEL_KEYS) - CODE_KEYS:
        sub = key if key == "datasets" else f"models/{key}"
        assert f"/runpod-volume/{sub}" in added[key]
        assert f"/runpod-volume/ComfyUI/{sub}" in added[key]
    assert "/runpod-volume/models/unet" in added["diffusion_models"]
    assert "/runpod-volume/ComfyUI/models/clip" in added["text_encoders"]


def test_custom_nodes_only_on_request() -> None:
    folders = ModelFolders.from_keys(MODEL_KEYS)
    config = volume_config(folders, Path("/v"), include_custom_nodes=True)
    assert config["runpod_volume"]["custom_nodes"] == "custom_nodes"
    assert config["runpod_volume_comfyui"]["base_path"] == "/v/ComfyUI"
    assert set(config["runpod_volume"]) == {"base_path", *MODEL_KEYS}


def _settings(tmp_path: Path, **env: str) -> Settings:
    return Settings.from_env({"COMFYUI_DIR": str(tmp_path / "comfyui"), **env})


def test_no_volume_no_config(tmp_path: Path) -> None:
    settings = _settings(tmp_path, NETWORK_VOLUME_PATH=str(tmp_path / "absent"))
    assert write_volume_config(settings, tmp_path / "out.yaml") is None
    assert not (tmp_path / "out.yaml").exists()
    assert volume_model_paths_args(settings, tmp_path / "out.yaml") == []
    assert model_download_root(settings) == tmp_path / "comfyui" / "models"


def test_volume_config_written_and_passed_after_the_operators_file(tmp_path: Path) -> None:
    volume = tmp_path / "vol"
    volume.mkdir()
    folders_file = tmp_path / "model_folders.json"
    folders_file.write_text(ModelFolders.from_keys(MODEL_KEYS, "0.33.0").model_dump_json())
    settings = _settings(tmp_path, NETWORK_VOLUME_PATH=str(volume), COMFYUI_MODEL_FOLDERS=str(folders_file),
                         COMFYUI_EXTRA_MODEL_PATHS="/etc/mine.yaml")
    dest = tmp_path / "gen" / "extra.yaml"
    assert volume_model_paths_args(settings, dest) == ["--extra-model-paths-config", str(dest)]
    # ComfyUI gets the operator's file first, then the volume's.
    assert comfyui_command(settings, volume_model_paths_args(settings, dest))[-4:] == [
        "--extra-model-paths-config", "/etc/mine.yaml", "--extra-model-paths-config", str(dest)]
    added = _comfyui_loader_semantics(yaml.safe_load(dest.read_text()), dest.parent)
    assert str(volume / "models" / "loras") in added["loras"]
    assert model_download_root(settings) == volume / "models"
    assert model_download_root(_settings(tmp_path, MODEL_DOWNLOAD_ROOT="/x")) == Path("/x")


def test_folders_read_from_a_checkout_and_cli(tmp_path: Path) -> None:
    # A minimal stand-in with the two names the reader uses from ComfyUI's folder_paths.
    checkout = tmp_path / "comfy"
    checkout.mkdir()
    (checkout / "folder_paths.py").write_text(
        "import os\n"
        "base_path = os.path.dirname(os.path.realpath(__file__))\n"
        "models_dir = os.path.join(base_path, 'models')\n"
        "folder_names_and_paths = {\n"
        "  'checkpoints': ([os.path.join(models_dir, 'checkpoints')], set()),\n"
        "  'diffusion_models': ([os.path.join(models_dir, 'unet'), os.path.join(models_dir, 'diffusion_models')], set()),\n"
        "  'custom_nodes': ([os.path.join(base_path, 'custom_nodes')], set()),\n"
        "  'elsewhere': (['/somewhere/else'], set()),\n"
        "}\n")
    (checkout / "comfyui_version.py").write_text("__version__ = '9.9.9'\n")
    folders = read_folders_from_comfyui(checkout)
    assert folders.comfyui_version == "9.9.9"
    assert folders.folders == {"checkpoints": ["models/checkpoints"],
                               "diffusion_models": ["models/unet", "models/diffusion_models"],
                               "custom_nodes": ["custom_nodes"], "elsewhere": []}
    assert not list(checkout.rglob("*.pyc"))
    out = tmp_path / "folders.json"
    assert main(["folders", "--comfyui-dir", str(checkout), "--out", str(out)]) == 0
    config = volume_config(ModelFolders.load(out), Path("/rv"))
    assert config["runpod_volume"]["elsewhere"] == "models/elsewhere"
    with pytest.raises(RuntimeError, match="could not read model folders"):
        read_folders_from_comfyui(tmp_path)


COMFYUI_DIR = os.environ.get("COMFYUI_DIR")


@pytest.mark.real_comfyui
@pytest.mark.skipif(not COMFYUI_DIR or not Path(COMFYUI_DIR, "folder_paths.py").is_file(),
                    reason="COMFYUI_DIR does not point to a ComfyUI checkout")
def test_real_comfyui_loads_the_generated_yaml(tmp_path: Path) -> None:
    comfy = Path(COMFYUI_DIR or "")
    folders = read_folders_from_comfyui(comfy)
    assert set(folders.folders) >= set(MODEL_KEYS)
    volume = tmp_path / "vol"
    config_file = tmp_path / "extra.yaml"
    config_file.write_text(yaml.safe_dump(volume_config(folders, volume)))
    probe = ("import json, os, sys; sys.path.insert(0, os.getcwd()); import folder_paths; "
             "import utils.extra_config as e; e.load_extra_path_config(sys.argv[1]); "
             "print(json.dumps({k: v[0] for k, v in folder_paths.folder_names_and_paths.items()}))")
    result = subprocess.run([sys.executable, "-B", "-c", probe, str(config_file)], cwd=comfy, check=True,
                            capture_output=True, text=True, timeout=120)
    paths = json.loads(result.stdout.strip().splitlines()[-1])
    for key in set(MODEL_KEYS) - CODE_KEYS:
        assert any(p.startswith(str(volume / "ComfyUI") + "/") for p in paths[key]), key
        assert any(p.startswith(str(volume) + "/models/") or p == str(volume / key) for p in paths[key]), key
