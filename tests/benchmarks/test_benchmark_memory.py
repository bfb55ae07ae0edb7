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
