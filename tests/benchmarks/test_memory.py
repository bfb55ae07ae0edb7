"""``memory --quick``: one run job's peak memory, and an embedded server's RSS over rounds of
requests after a warm-up."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def result(quick: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
    return quick("memory")


def test_the_run_job_peak_is_the_job_s_own_process(result: dict[str, Any]) -> None:
    # A Python process that imported the harness holds tens of MB; 0 would mean wait4 read
    # nothing, and a GB would mean it counted something other than the job.
    job = result["details"]["run_job"]
    study = yaml.safe_load((ROOT / "config.yaml").read_text(encoding="utf-8"))
    assert job["config_id"] == study["configs"][0]["id"]
    assert 15 < job["peak_rss_mb"] < 1024


def _growth(rss: list[float]) -> float:
    third = max(1, len(rss) // 3)
    return statistics.median(rss[-third:]) - statistics.median(rss[:third])


def test_the_growth_goal_reads_only_the_rounds_after_the_warm_up(result: dict[str, Any]) -> None:
    goals = {g["name"]: g for g in result["goals"]}
    for row in result["details"]["servers"]:
        n, warmup, rss = row["n"], row["warmup_requests"], row["rss_after_rounds_mb"]
        steady = [mb for r, mb in enumerate(rss) if (r + 1) * n > warmup]
        assert 0 < len(steady) == row["steady_rounds"] < len(rss)
        # the last third of those rounds against the first third: a plateau reads 0
        assert row["growth_mb"] == pytest.approx(_growth(steady))
        (goal,) = [g for name, g in goals.items() if name.endswith(f"after a warm-up, N={n}")]
        assert goal["measured"] == row["growth_mb"]
