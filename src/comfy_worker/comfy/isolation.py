"""What ComfyUI's process is given: an environment without the worker's secrets, and its own user.

ComfyUI runs every custom node in its process, and some nodes evaluate code a workflow carries. Whatever that
process can read, a workflow can read: so it gets only the variables a Python, CUDA or ROCm program needs
(plus those the operator names in COMFYUI_ENV_PASSTHROUGH), never storage keys, Drive credentials, model-host
tokens or RunPod's keys; and, where the worker runs as root (the image), an unprivileged user that can write
only ComfyUI's input, output and temp folders.
"""

from __future__ import annotations

import os
import pwd
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

# Variables a Python program on a GPU needs, by exact name.
ALLOWED_NAMES = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "TERM", "LANG", "LANGUAGE", "TZ", "TMPDIR", "HOSTNAME",
    "VIRTUAL_ENV", "PYTHONPATH", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "PYTHONIOENCODING", "PYTHONUTF8",
    "PYTHONHASHSEED", "LD_LIBRARY_PATH", "LD_PRELOAD", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
    "HF_HOME", "HF_HUB_CACHE", "HF_HUB_OFFLINE", "HF_HUB_ENABLE_HF_TRANSFER", "TRANSFORMERS_CACHE",
    "TRANSFORMERS_OFFLINE", "TORCH_HOME",
})
# ... and by prefix: locale, GPU drivers and runtimes, torch's and its kernels' own switches.
ALLOWED_PREFIXES = ("LC_", "CUDA_", "NVIDIA_", "PYTORCH_", "TORCH_", "TORCHINDUCTOR_", "NCCL_", "CUBLAS_",
                    "CUDNN_", "TRITON_", "XFORMERS_", "HIP_", "HSA_", "ROCR_", "ROCM_", "MIOPEN_", "ONEAPI_",
                    "SYCL_", "ZE_", "MPS_")
# A name that says it holds a secret never passes by prefix; only the operator's explicit list lets it through.
_SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|API_KEY|ACCESS_KEY|PRIVATE_KEY")


def passthrough_patterns(setting: str) -> list[str]:
    """COMFYUI_ENV_PASSTHROUGH as a list: names, or prefixes ending in `*`."""
    return [item.strip() for item in setting.split(",") if item.strip()]


def _named(name: str, patterns: list[str]) -> bool:
    return any(name.startswith(p[:-1]) if p.endswith("*") else name == p for p in patterns)


def comfyui_environment(environ: Mapping[str, str], passthrough: list[str],
                        identity: Identity | None = None) -> dict[str, str]:
    """The environment ComfyUI starts with: the allowlist, the operator's passthrough, and the identity's
    HOME/USER when it runs as another user."""
    env: dict[str, str] = {}
    for name, value in environ.items():
        allowed = name in ALLOWED_NAMES or (name.startswith(ALLOWED_PREFIXES) and not _SECRET_NAME.search(name))
        if allowed or _named(name, passthrough):
            env[name] = value
    env.setdefault("PYTHONUNBUFFERED", "1")
    if identity is not None:
        env.update(HOME=identity.home, USER=identity.name, LOGNAME=identity.name)
    return env


@dataclass(frozen=True)
class Identity:
    """The user ComfyUI runs as."""

    name: str
    uid: int
    gid: int
    home: str

    def popen_args(self) -> dict[str, object]:
        # extra_groups=[] drops root's supplementary groups; umask 022 keeps outputs readable by the worker.
        return {"user": self.uid, "group": self.gid, "extra_groups": [], "umask": 0o022}

    def own(self, folder: Path) -> None:
        """Give ComfyUI one of its writable folders (the folder itself: its content is ComfyUI's to make)."""
        folder.mkdir(parents=True, exist_ok=True)
        os.chown(folder, self.uid, self.gid)


class IdentityError(OSError):
    """ComfyUI cannot be started as the configured user: it is not started at all."""


def comfyui_identity(user: str | None) -> Identity | None:
    """The user named by COMFYUI_USER, when the worker can switch to it; None when unset or already that user.

    Raises IdentityError when the user does not exist or the worker, not being root, cannot switch to it: a
    worker told to separate ComfyUI must not quietly run it with the worker's rights."""
    if not user:
        return None
    try:
        entry = pwd.getpwnam(user) if not user.isdigit() else pwd.getpwuid(int(user))
    except KeyError:
        raise IdentityError(f"COMFYUI_USER={user!r}: no such user") from None
    if entry.pw_uid == os.geteuid():
        return None
    if os.geteuid() != 0:
        raise IdentityError(f"COMFYUI_USER={user!r}: the worker runs as uid {os.geteuid()}, not root, so it cannot "
                            "start ComfyUI as another user; unset COMFYUI_USER or run the worker as root")
    return Identity(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir or "/nonexistent")
