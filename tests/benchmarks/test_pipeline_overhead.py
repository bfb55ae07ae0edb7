"""``pipeline_overhead --quick``: a sample of the full study through real Snakemake on the
embedded server, and the full study's wall time derived from it term by term."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_full_study_is_derived_term_by_term_from_a_sample(
    quick: Callable[[str], dict[str, Any]],
) -> None:
    (sample,) = quick("pipeline_overhead")["details"]["samples"]["after"]
    study = yaml.safe_load((ROOT / "config.yaml").read_text(encoding="utf-8"))
    fs, b, runs = sample["full_study"], sample["breakdown_s"], sample["records"]
    configs = len({r["config_id"] for r in sample["per_run"]})
    run_jobs_s = sum(j["wall_s"] for j in sample["jobs"] if j["rule"] == "run")
    assert fs["configs"] == len(study["configs"]) and fs["runs"] == fs["configs"] * study["runs"]
    # per run: its measured phases, and the rest of its run job
    measured, outside = fs["measured_per_run_s"], fs["outside_per_run_s"]
    assert measured == pytest.approx(b["measured phases"] / runs)
    assert outside == pytest.approx(run_jobs_s / runs - measured)
    assert sum(fs["outside_per_run_breakdown_s"].values()) == pytest.approx(outside)
    # per config: its start_servers and unload jobs; once: the rest of the sample's wall
    per_config = b["start_servers jobs (server start excluded)"] + b["unload jobs"]
    assert fs["per_config_s"] == pytest.approx(per_config / configs)
    assert fs["once_s"] == pytest.approx(sample["wall_s"] - run_jobs_s - per_config)
    wall = fs["runs"] * (measured + outside) + fs["configs"] * fs["per_config_s"] + fs["once_s"]
    assert fs["wall_s"] == pytest.approx(wall)
    assert fs["measured_share_pct"] == pytest.approx(100 * fs["runs"] * measured / wall)
