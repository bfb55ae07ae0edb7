"""Smoke test of the memory benchmark's run-job measurement (benchmarks/memory.py)."""

from __future__ import annotations

import yaml

from benchmarks import memory
from benchmarks.common import ROOT


def test_run_job_peak_is_the_jobs_own_process() -> None:
    # A Python process that imported the harness holds tens of MB; 0 would mean wait4 read
    # nothing, and a GB would mean it counted something other than the job.
    out = memory.run_job_peak()
    study = yaml.safe_load((ROOT / "config.yaml").read_text())
    assert out["config_id"] == study["configs"][0]["id"]
    assert 15 < out["peak_rss_mb"] < 1024


def test_the_goal_tells_a_plateau_from_a_leak() -> None:
    # Rounds of 2 requests: RSS rises by 20 MB over the warm-up (caches filling), then is
    # flat (a plateau) or keeps rising by 5 KB a request (a leak the goal must catch).
    p = {"warmup": 160, "requests": 640}
    served = list(range(2, 801, 2))
    plateau = [260 + 20 * min(s, 150) / 150 for s in served]
    leak = [r + 0.005 * max(0, s - 150) for r, s in zip(plateau, served, strict=True)]
    flat, leaking = memory._summary(2, p, served, plateau), memory._summary(2, p, served, leak)
    assert flat["steady_requests"] == leaking["steady_requests"] == 640
    assert flat["growth_mb"] == 0 and flat["slope_mb_per_1000"] < 1e-9
    assert flat["first_window_growth_mb"] > memory.FIRST_WINDOW_GOAL_MB  # the old goal failed
    assert leaking["growth_mb"] > memory.GROWTH_GOAL_MB
    assert abs(leaking["slope_mb_per_1000"] - 5) < 1e-6
