"""The benchmark scripts still run end to end (tiny sizes, emulator): a benchmark that no longer starts is
found here, not when someone needs its figures. Their timings are not checked here."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


@pytest.fixture
def scratch() -> Iterator[Path]:
    """The scripts' temporary folder. Short: SeaweedFS puts unix sockets in it (at most 107 bytes a path)."""
    folder = Path(tempfile.mkdtemp(prefix="bench-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _run(script: str, scratch: Path, *args: str, timeout: float = 240) -> str:
    env = {k: v for k, v in os.environ.items() if k not in {"COMFYUI_DIR", "COMFYUI_URL"}}
    env["TMPDIR"] = str(scratch)
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    # Servers' data (gigabytes for a full delivery run) and ComfyUI's folders go when the script ends.
    assert list(scratch.iterdir()) == []
    return output


def test_overhead_benchmark_prints_every_path_and_the_ratio_in_both_modes(scratch: Path) -> None:
    output = _run("bench_overhead.py", scratch, "--jobs", "2", "--warmup", "1")
    assert "target: emulator" in output
    for mode in ("managed", "attached"):
        assert f"{mode}: direct " in output
    assert output.count("(worker - server) / direct = ") == 2


def test_memory_benchmark_prints_idle_peak_and_the_target(scratch: Path) -> None:
    output = _run("bench_memory.py", scratch, "--outputs", "2", "--mb", "1")
    assert "job: 2 outputs x 1 MB = 2 MB, delivered to S3" in output
    assert "worker RSS idle" in output and "above idle / sum of outputs = " in output
    assert "target: above idle <= largest output + 64 MB" in output


def test_delivery_benchmark_prints_throughputs_cpu_and_ratios(scratch: Path) -> None:
    output = _run("bench_delivery.py", scratch, "--workloads", "3x1,2x2", "--rounds", "1")
    assert output.count("MB/s") == 6
    assert "CPU per round: S3 server" in output
    assert output.count("ratio against the tuned sequential client: ") == 2


def test_model_cache_benchmark_two_workers_four_jobs_one_download(scratch: Path) -> None:
    output = _run("bench_model_cache.py", scratch, "--mb", "8", "--mbps", "40", "--rounds", "1")
    assert "4 jobs in 2 worker processes sharing one cache" in output and "; all completed" in output
    assert "downloads the host served per round: 1 (target: 1)" in output
    assert "time of 4 jobs / time of one download = " in output


def test_live_delivery_benchmark_prints_both_times_and_the_target(scratch: Path) -> None:
    output = _run("bench_live_delivery.py", scratch, "--mb", "2", "--gap", "0.5")
    assert "result after the last node: " in output and "delivered at the end" in output
    assert "one output alone (hash + upload): " in output and "target: as nodes finish <= one upload" in output
