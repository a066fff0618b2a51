"""Stopping a child process the worker or one of its tools started, so that none is left behind."""

from __future__ import annotations

import subprocess


def stop_process(proc: subprocess.Popen, timeout: float = 15) -> None:  # type: ignore[type-arg]
    """Ask it to end (SIGTERM), and kill it if it has not within `timeout` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
