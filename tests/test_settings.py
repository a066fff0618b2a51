from pathlib import Path

import pytest

from comfy_worker.comfy.process import comfyui_command
from comfy_worker.settings import Settings, SettingsError


def test_defaults():
    s = Settings.from_env({})
    assert s.comfyui_dir == Path("/comfyui")
    assert s.base_url == "http://127.0.0.1:8188"
    assert s.manages_process
    assert s.input_dir == Path("/comfyui/input") and s.temp_dir == Path("/comfyui/temp")


def test_values_are_parsed_and_attach_mode():
    s = Settings.from_env({"COMFYUI_URL": "http://10.0.0.5:8188/", "COMFYUI_PORT": "9000", "CLEANUP": "false",
                           "LOG_LEVEL": "debug"})
    assert s.base_url == "http://10.0.0.5:8188" and not s.manages_process
    assert s.comfyui_port == 9000 and s.cleanup is False and s.log_level == "DEBUG"


@pytest.mark.parametrize("env, name", [
    ({"COMFYUI_PORT": "eighty"}, "COMFYUI_PORT"),
    ({"COMFYUI_PORT": "70000"}, "COMFYUI_PORT"),
    ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
    ({"CLEANUP": "maybe"}, "CLEANUP"),
])
def test_bad_values_name_the_variable(env, name):
    with pytest.raises(SettingsError, match=name):
        Settings.from_env(env)


def test_comfyui_flags():
    s = Settings.from_env({"COMFYUI_DIR": "/c", "COMFYUI_PORT": "8190", "COMFYUI_EXTRA_ARGS": "--cpu --preview-method auto",
                           "COMFYUI_EXTRA_MODEL_PATHS": "/x.yaml", "COMFYUI_PYTHON": "/py"})
    cmd = comfyui_command(s)
    assert cmd[:3] == ["/py", "-u", "/c/main.py"]
    joined = " ".join(cmd)
    for part in ("--listen 127.0.0.1", "--port 8190", "--disable-auto-launch", "--input-directory /c/input",
                 "--output-directory /c/output", "--temp-directory /c", "--extra-model-paths-config /x.yaml",
                 "--cpu --preview-method auto"):
        assert part in joined
