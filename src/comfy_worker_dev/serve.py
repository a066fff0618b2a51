"""`./scripts/serve.sh`: the runpod SDK's local API server with the worker, in the foreground, against the ComfyUI
emulator, or a real ComfyUI when COMFYUI_DIR (and COMFYUI_PYTHON) are set, or COMFYUI_URL. Ctrl-C stops it.

    python -m comfy_worker_dev.serve [--host 127.0.0.1] [--port 8000]
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from .localserver import comfyui_env
from .repo import repo_root

log = logging.getLogger("comfy_worker_dev.serve")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    workdir = Path(tempfile.mkdtemp(prefix="comfy-worker-serve-"))
    try:
        env, label = comfyui_env(workdir)
        url = f"http://{'localhost' if args.host in {'127.0.0.1', '0.0.0.0'} else args.host}:{args.port}"
        log.info("serve: the worker against %s; once ComfyUI is up: POST %s/runsync, /run, /status/<id>", label, url)
        cmd = [sys.executable, str(repo_root() / "handler.py"), "--rp_serve_api", "--rp_api_host", args.host,
               "--rp_api_port", str(args.port)]
        # Not RunPod: no job loop, only the local server (the SDK picks its mode by this variable).
        child_env = {k: v for k, v in {**os.environ, **env}.items() if k != "RUNPOD_WEBHOOK_GET_JOB"}
        proc = subprocess.Popen(cmd, cwd=str(repo_root()), env=child_env)
        # A stop meant for this script (kill, a supervisor) reaches the worker as the Ctrl-C it handles.
        signal.signal(signal.SIGTERM, lambda *_: proc.send_signal(signal.SIGINT))
        while True:
            try:
                return proc.wait()
            except KeyboardInterrupt:  # the worker got the same Ctrl-C; wait for it to stop
                continue
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
