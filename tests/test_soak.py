"""Hundreds of jobs through one worker runtime leave nothing behind: no files, no history, no leaked
descriptors, threads or memory (benchmarks/soak.py prints the same figures for longer runs)."""

from __future__ import annotations

import pytest

from benchmarks.soak import soak

pytestmark = pytest.mark.slow


def test_three_hundred_jobs_leave_nothing_behind(tmp_path):
    report = soak(tmp_path, jobs=300, warmup=30)
    summary = "\n".join(report.lines())
    assert report.wrong == [], summary + "\n" + "\n".join(report.wrong[:5])
    assert report.files_left == {"input": [], "output": [], "temp": []}, summary
    assert report.history_left == 0 and report.queue_left == 0, summary
    assert report.end["fds"] - report.start["fds"] <= 3, summary
    # The default executor of to_thread may still grow to its bound (min(32, cpus + 4)); beyond that a
    # thread per job would show.
    assert report.end["threads"] - report.start["threads"] <= 8, summary
    assert report.end["rss_kb"] - report.start["rss_kb"] < 30 * 1024, summary
