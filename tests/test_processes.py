"""stop_process: a child that ends on SIGTERM is waited for; one that ignores it is killed."""

from __future__ import annotations

import subprocess
import sys
import time

from comfy_worker_build.processes import stop_process


def test_a_child_that_ends_on_sigterm_is_reaped() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    stop_process(proc, timeout=10)
    assert proc.returncode is not None and proc.returncode < 0


def test_a_child_that_ignores_sigterm_is_killed_after_the_timeout() -> None:
    code = "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    started = time.monotonic()
    stop_process(proc, timeout=0.5)
    assert proc.returncode == -9
    assert time.monotonic() - started < 10
