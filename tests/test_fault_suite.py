"""A short run of benchmarks/fault_suite.py against the emulator: every fault kind once, each ending with
the right outcome, no hang, no output lost or delivered to the wrong job, no file left behind."""

from __future__ import annotations

import pytest

from benchmarks.fault_suite import EMULATOR_KINDS, run_suite, table

pytestmark = pytest.mark.slow


def test_every_fault_ends_each_job_rightly_and_leaves_nothing(tmp_path):
    kinds = [k for k in EMULATOR_KINDS if k != "hang"]
    # The emulator injects these faults; a real ComfyUI (COMFYUI_DIR) cannot be told to.
    tallies, left = run_suite(tmp_path, kinds, runs=1, job_timeout=20, real=False)
    summary = "\n".join(table(tallies) + [w for t in tallies.values() for w in t.wrong])
    assert set(tallies) == set(kinds)
    for kind, tally in tallies.items():
        assert tally.hangs == 0 and tally.lost == 0 and tally.misdelivered == 0, summary
        assert tally.right == tally.jobs, summary
    assert left == {"input": 0, "output": 0, "temp": 0}, summary


def test_hung_comfyui_ends_the_job_with_timeout(tmp_path):
    tallies, left = run_suite(tmp_path, ["hang"], runs=1, job_timeout=8, real=False)
    assert tallies["hang"].hangs == 0, "\n".join(table(tallies))
    assert tallies["hang"].right == 1
    assert left == {"input": 0, "output": 0, "temp": 0}
