"""ComfyUI as a supervised child process: started with flags from settings, awaited until it answers,
its log forwarded with a prefix and kept for error reports, and restarted (with backoff) when it dies."""

from __future__ import annotations

import collections
import logging
import os
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import requests

from ..settings import Settings
from .isolation import comfyui_environment, comfyui_identity, passthrough_patterns

log = logging.getLogger("comfy_worker.comfy.process")
comfy_log = logging.getLogger("comfyui")

ExitListener = Callable[[int], None]


def comfyui_command(settings: Settings, extra_args: Sequence[str] = ()) -> list[str]:
    """The command line that starts ComfyUI for this worker: the operator's model paths file, then
    `extra_args` (the network volume's model paths), then the operator's own flags."""
    main_py = settings.comfyui_dir / "main.py"
    cmd = [
        settings.comfyui_python, "-u", str(main_py),
        "--listen", settings.comfyui_host,
        "--port", str(settings.comfyui_port),
        "--disable-auto-launch",
        "--input-directory", str(settings.input_dir),
        "--output-directory", str(settings.output_dir),
        "--temp-directory", str(settings.comfyui_temp_dir or settings.comfyui_dir),
    ]
    if settings.comfyui_extra_model_paths is not None:
        cmd += ["--extra-model-paths-config", str(settings.comfyui_extra_model_paths)]
    if settings.comfyui_preview_method:
        cmd += ["--preview-method", settings.comfyui_preview_method]
    cmd += list(extra_args)
    cmd += shlex.split(settings.comfyui_extra_args)
    return cmd


class ComfyProcess:
    """Owns the ComfyUI child process for the life of the worker."""

    def __init__(self, settings: Settings, extra_args: Sequence[str] = ()) -> None:
        self.settings = settings
        self.extra_args = list(extra_args)
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._log = collections.deque(maxlen=settings.comfyui_log_lines)
        self._listeners: list[ExitListener] = []
        self._failure_listeners: list[Callable[[str], None]] = []
        self.failure: str | None = None  # set once the supervisor gives up: ComfyUI stays down
        self._verdict = threading.Event()  # set once the supervisor has decided about an exit
        self._stopping = False
        self._ready = threading.Event()
        self.generation = 0
        self.last_exit_code: int | None = None
        self.restarts = 0
        self.boot_seconds: float | None = None
        self._supervisor: threading.Thread | None = None
        self._started_at = time.monotonic()

    # --- public ---------------------------------------------------------------------------------
    def add_exit_listener(self, listener: ExitListener) -> None:
        self._listeners.append(listener)

    def add_failure_listener(self, listener: Callable[[str], None]) -> None:
        self._failure_listeners.append(listener)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def exit_code(self) -> int | None:
        """The exit code of the current process once it has exited (before the supervisor has seen it too)."""
        proc = self._proc
        if proc is not None and proc.poll() is not None:
            return proc.returncode
        return self.last_exit_code

    def wait_verdict(self, timeout: float) -> None:
        """After ComfyUI went down: wait (bounded) until the supervisor has decided to restart it or to give
        up, so that a job's failure can say which, and the worker knows whether to end."""
        if not self.is_alive() and self._supervisor is not None:
            self._verdict.wait(timeout)

    def is_alive(self) -> bool:
        proc = self._proc
        return proc is not None and proc.poll() is None

    def is_ready(self) -> bool:
        return self._ready.is_set() and self.is_alive()

    def will_restart(self) -> bool:
        """Whether a ComfyUI that is down now is (or will shortly be) started again by the supervisor."""
        return (self.settings.comfyui_restart and not self._stopping and self._supervisor is not None
                and self._supervisor.is_alive())

    def log_tail(self, lines: int = 40) -> list[str]:
        return list(self._log)[-lines:]

    def start(self) -> None:
        """Start ComfyUI (not waiting for it) and the thread that supervises it."""
        self._spawn()
        if self._supervisor is None:
            self._supervisor = threading.Thread(target=self._supervise, name="comfyui-supervisor", daemon=True)
            self._supervisor.start()

    def _spawn(self) -> None:
        main_py = self.settings.comfyui_dir / "main.py"
        if not main_py.is_file():
            msg = f"ComfyUI not found: {main_py} does not exist (set COMFYUI_DIR)"
            self._log.append(msg)
            raise FileNotFoundError(msg)
        identity = comfyui_identity(self.settings.comfyui_user)
        for folder in (self.settings.input_dir, self.settings.output_dir):
            Path(folder).mkdir(parents=True, exist_ok=True)
        if identity is not None:
            # The folders ComfyUI writes (its user folder holds settings and its database); nothing else.
            for folder in (self.settings.input_dir, self.settings.output_dir, self.settings.temp_dir,
                           self.settings.comfyui_dir / "user"):
                identity.own(Path(folder))
        cmd = comfyui_command(self.settings, self.extra_args)
        env = comfyui_environment(os.environ, passthrough_patterns(self.settings.comfyui_env_passthrough), identity)
        with self._lock:
            self._ready.clear()
            self._verdict.clear()
            self.generation += 1
            log.info("starting ComfyUI (generation %d): %s", self.generation, shlex.join(cmd))
            self._started_at = time.monotonic()
            self._proc = subprocess.Popen(
                cmd, cwd=str(self.settings.comfyui_dir), env=env, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=_die_with_parent, **(identity.popen_args() if identity else {}))
            proc = self._proc
        threading.Thread(target=self._pump_log, args=(proc,), name="comfyui-log", daemon=True).start()

    def wait_ready(self, timeout: float) -> bool:
        """Poll ComfyUI until it answers, it exits, or the timeout passes."""
        deadline = time.monotonic() + timeout
        url = f"http://{self.settings.comfyui_host}:{self.settings.comfyui_port}/system_stats"
        generation = self.generation
        while time.monotonic() < deadline:
            if not self.is_alive() or generation != self.generation:
                return False
            try:
                if requests.get(url, timeout=2).status_code == 200:
                    if generation == self.generation:
                        self.boot_seconds = time.monotonic() - self._started_at
                        log.info("ComfyUI ready after %.2f s (pid %s)", self.boot_seconds, self.pid)
                        self._ready.set()
                    return True
            except requests.RequestException:
                pass
            time.sleep(0.05)
        return False

    def wait_until_ready(self, timeout: float) -> bool:
        """Block until a running ComfyUI has been seen ready (for callers during a restart)."""
        return self._ready.wait(timeout) and self.is_alive()

    def kill(self) -> None:
        """Kill the running ComfyUI now (it is stuck); the supervisor restarts it. Returns once it is gone,
        so nobody takes the dying process for a ready one."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            log.warning("killing ComfyUI (pid %s)", proc.pid)
            self._ready.clear()
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                log.error("ComfyUI (pid %s) did not exit after SIGKILL", proc.pid)

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping = True
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        log.info("stopping ComfyUI (pid %s)", proc.pid)
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)

    # --- internals ------------------------------------------------------------------------------
    def _pump_log(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for raw in iter(proc.stdout.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip()
            if line:
                self._log.append(line)
                comfy_log.info("[ComfyUI] %s", line)

    def _supervise(self) -> None:
        """Waits on the current process and restarts it. Restarts happen on this one long-lived thread,
        because the child's parent-death signal is tied to the thread that started it."""
        while not self._stopping:
            proc = self._proc
            if proc is None:
                return
            code = proc.wait()
            with self._lock:
                if proc is not self._proc:
                    continue
                self._ready.clear()
                self.last_exit_code = code
                uptime = time.monotonic() - self._started_at
            if self._stopping or not self._after_exit(code, uptime) or self._stopping:
                return
            if not self._restart():
                return

    def _after_exit(self, code: int, uptime: float) -> bool:
        """Tell the listeners, and decide: True when ComfyUI is to be started again (after any backoff)."""
        log.error("ComfyUI exited with code %s after %.1f s", code, uptime)
        if self.boot_seconds is None:
            # It never answered: the worker's start fails with this exit, it is not retried.
            self._give_up(f"ComfyUI exited with code {code} before it answered")
            return False
        for listener in list(self._listeners):
            try:
                listener(code)
            except Exception:  # a listener must never stop the restart
                log.exception("exit listener failed")
        if not self.settings.comfyui_restart:
            self._give_up(f"ComfyUI exited with code {code} and COMFYUI_RESTART is off")
            return False
        # Back off only when it keeps dying soon after start; a long-lived process restarts at once.
        self.restarts = self.restarts + 1 if uptime < 60 else 1
        if self.restarts > self.settings.comfyui_max_restarts:
            self._give_up(f"ComfyUI exited with code {code} {self.restarts} times in a row within a minute of "
                          "starting")
            return False
        self._verdict.set()  # it will be restarted
        if self.restarts > 1:
            delay = min(self.settings.comfyui_restart_backoff_max, 0.5 * 2 ** (self.restarts - 2))
            log.warning("restarting ComfyUI in %.1f s (restart %d)", delay, self.restarts)
            time.sleep(delay)
        return True

    def _restart(self) -> bool:
        """Start ComfyUI again and wait for it; False (and the failure recorded) when that does not work."""
        try:
            self._spawn()
        except OSError as exc:
            self._give_up(f"ComfyUI could not be restarted: {exc}")
            return False
        if not self.wait_ready(self.settings.comfyui_start_timeout) and self.is_alive():
            self._give_up(f"the restarted ComfyUI did not answer within {self.settings.comfyui_start_timeout:.0f} s")
            return False
        return True

    def _give_up(self, reason: str) -> None:
        """ComfyUI stays down: tell the listeners (the worker ends rather than take jobs it cannot run)."""
        self.failure = reason
        self._verdict.set()
        log.error("%s; ComfyUI is not restarted again", reason)
        for listener in list(self._failure_listeners):
            try:
                listener(reason)
            except Exception:  # a listener must never break the supervisor
                log.exception("failure listener failed")


def _die_with_parent() -> None:
    """Runs in the child before exec: ask Linux to stop ComfyUI if the worker dies without cleaning up."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
