"""Smoke tests of the benchmark harness (benchmarks/): its pieces work and agree with the
library. The benchmarks themselves run with ``python -m benchmarks`` (see benchmarks/README.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.common import Result, servers, summary, write_result
from benchmarks.readme import START, render_table, update_readme
from benchmarks.synthetic_records import ensure_records, make_record
from mabench.measure.records import read_record, validate_record


def test_goals_results_and_readme_table(tmp_path: Path) -> None:
    res = Result("demo", "Demo")
    res.goal("x", 99.9, ">=", 99.8, "%", "median")
    res.goal("y", 3.0, "<=", 2.0, "ms")
    assert [g.passed for g in res.goals] == [True, False]
    assert res.final_status == "fail"
    info = {"cpu_model": "cpu", "logical_cpus": 2, "memory_gb": 4, "python": "3.11", "date": "d"}
    path = write_result(res, quick=False, machine_info=info, started=0.0, out_dir=tmp_path)
    doc = json.loads(path.read_text())
    assert doc["status"] == "fail" and doc["goals"][1]["goal"] == "≤ 2 ms"
    table = render_table([doc])
    assert "**FAIL**" in table and "99.9" in table
    readme = tmp_path / "README.md"
    readme.write_text("# T\n\nprose\n")
    update_readme(readme, tmp_path)
    assert START in readme.read_text() and "prose" in readme.read_text()


def test_summary_spread() -> None:
    s = summary([1, 2, 3, 4, 100])
    assert s["median"] == 3 and s["min"] == 1 and s["max"] == 100 and s["n"] == 5


def test_synthetic_records_are_valid_and_deterministic(tmp_path: Path) -> None:
    data = make_record(5).to_json()
    validate_record(data)
    assert make_record(5).to_json() == data
    paths = ensure_records(30, tmp_path)
    assert read_record(paths[29]).config_id == "cfg029"
    assert read_record(paths[3]) == make_record(3)


@pytest.mark.parametrize("coordinator", ["asyncio", "threads"])
def test_ideal_servers_give_full_true_efficiency(coordinator: str) -> None:
    from benchmarks.harness_overhead import QUICK, run_execute

    # a smoke test of the harness, not a measurement: wide bounds (the machine may be busy)
    p = {**QUICK, "ttft_ms": 100.0, "token_ms": 10.0, "num_predict": 11}
    with servers("ideal", 2, p["ttft_ms"], p["token_ms"]) as fleet:
        row = run_execute(fleet, 2, coordinator, 1, p)
    assert row["true_efficiency"] == pytest.approx(100.0, abs=10.0)
    assert row["wall_minus_ideal_ms"] > 0


@pytest.mark.parametrize("coordinator", ["asyncio", "threads"])
def test_ideal_servers_give_full_true_efficiency_through_the_openai_api(coordinator: str) -> None:
    from benchmarks.harness_overhead import QUICK, run_execute

    # the same smoke test through the OpenAI API (the ideal server streams SSE)
    p = {**QUICK, "ttft_ms": 100.0, "token_ms": 10.0, "num_predict": 11, "api": "openai"}
    with servers("ideal", 2, p["ttft_ms"], p["token_ms"]) as fleet:
        row = run_execute(fleet, 2, coordinator, 1, p)
    assert row["api"] == "openai"
    assert row["true_efficiency"] == pytest.approx(100.0, abs=10.0)
    assert row["wall_minus_ideal_ms"] > 0


def test_ttft_accuracy_drives_the_openai_path() -> None:
    from benchmarks.ttft_accuracy import QUICK, measure_server

    p = {**QUICK, "ttft_ms": 40.0, "calls": 3, "phases": 2, "api": "openai"}
    entry = measure_server("ideal", p)
    # the ideal server sends the role-only chunk at once: TTFT taken there would be an error
    # of about -40 ms; the first content delta comes 40 ms after the request, so the error is
    # what the client adds (positive; the bound is only that it is no second TTFT)
    medians = [entry["client"][k]["median"] for k in ("async", "sync", "raw")]
    medians += [entry["harness"][c]["all_calls"]["median"] for c in ("asyncio", "threads")]
    assert all(-1.0 < m < p["ttft_ms"] for m in medians), medians
    assert entry["harness"]["asyncio"]["all_calls"]["n"] == 2 * p["phases"]


@pytest.mark.parametrize("coordinator", ["asyncio", "threads"])
def test_many_agents_measures_concurrent_phases(coordinator: str) -> None:
    from benchmarks.many_agents import QUICK, measure

    p = {**QUICK, "phases": 1}
    with servers("ideal", 8, p["ttft_ms"], p["token_ms"]) as fleet:
        (row,) = measure(fleet, 8, coordinator, p, profile=False)
    # the ideal servers' timing is exact, so no phase can be shorter than one agent alone
    assert row["wall_minus_ideal_ms"] >= 0 and row["efficiency_lower_bound"] <= 100.0
    assert row["ttft_error_ms"]["n"] == 8 * p["calls"]


def test_the_full_study_is_derived_term_by_term_from_a_sample() -> None:
    from benchmarks.pipeline_overhead import full_study

    per_run = [
        {"config_id": c, "run_index": r, "load_s": 0.2, "warmup_s": 0.1}
        for c in ("a", "b")
        for r in (1, 2)
    ]
    sample = {
        "wall_s": 60.0,
        "records": 4,
        "per_run": per_run,
        "jobs": [{"rule": "run", "wall_s": 11.0}] * 4 + [{"rule": "unload", "wall_s": 1.0}] * 2,
        "breakdown_s": {
            "measured phases": 40.0,
            "run job start-up/teardown": 2.0,
            "execute_run outside the phases": 2.0,
            "start_servers jobs (server start excluded)": 1.0,
            "unload jobs": 2.0,
        },
    }
    fs = full_study(sample, {"configs": 27, "runs_per_config": 5})
    # per run 10 s measured + 1 s outside; per config 1.5 s; once 60 - 44 - 3 = 13 s
    assert fs["runs"] == 135 and fs["per_config_s"] == 1.5 and fs["once_s"] == 13.0
    assert fs["wall_s"] == pytest.approx(135 * 11 + 27 * 1.5 + 13)
    assert fs["measured_share_pct"] == pytest.approx(100 * 1350 / fs["wall_s"])
    assert sum(fs["outside_per_run_breakdown_s"].values()) == pytest.approx(1.0)
    # the agents' load and warm-up walls are reported, not added (they may overlap)
    assert fs["load_and_warmup_agent_walls_s"] == pytest.approx({"loads": 0.2, "warm-ups": 0.1})
