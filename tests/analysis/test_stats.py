"""Statistics against hand-computed values on small frames."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from synthetic import build

from mabench.analysis import stats
from mabench.analysis.tables import AGENTS_SCHEMA, CALLS_SCHEMA, RUNS_SCHEMA, to_table


def test_describe_hand_computed() -> None:
    d = stats.describe([1, 2, 3, 4, 10], resamples=200, seed=1, key="k")
    assert d["n"] == 5
    assert d["mean"] == 4.0
    assert d["median"] == 3.0
    # sample variance: (9 + 4 + 1 + 0 + 36) / 4 = 12.5
    assert d["std"] == pytest.approx(math.sqrt(12.5))
    assert d["cv"] == pytest.approx(100 * math.sqrt(12.5) / 4)
    assert (d["min"], d["max"]) == (1.0, 10.0)
    # linear interpolation at (n - 1) p: P25 -> index 1 = 2, P75 -> index 3 = 4,
    # P5 -> index 0.2 = 1.2, P95 -> index 3.8 = 4 + 0.8 * 6 = 8.8
    assert d["p25"] == 2.0 and d["p50"] == 3.0 and d["p75"] == 4.0
    assert d["p5"] == pytest.approx(1.2) and d["p95"] == pytest.approx(8.8)
    assert d["ci_low"] <= d["mean"] <= d["ci_high"]
    assert d["ci_low"] >= 1.0 and d["ci_high"] <= 10.0


def test_describe_small_n_and_missing() -> None:
    one = stats.describe([7.0, None, float("nan")])
    assert one["n"] == 1 and one["mean"] == 7.0
    assert one["std"] is None and one["cv"] is None
    assert one["ci_low"] is None and one["ci_high"] is None
    empty = stats.describe([None, None])
    assert empty["n"] == 0 and empty["mean"] is None and empty["p95"] is None
    # CV is undefined for a metric that can be negative (a delta)
    assert stats.describe([-1.0, 1.0, 3.0])["cv"] is None


def test_bootstrap_is_deterministic_per_seed_and_key() -> None:
    x = [1.0, 2.5, 3.0, 7.5, 9.0, 4.0]
    a = stats.bootstrap_ci(x, 1000, seed=5, key="g")
    assert a == stats.bootstrap_ci(x, 1000, seed=5, key="g")
    assert a != stats.bootstrap_ci(x, 1000, seed=6, key="g")
    assert a != stats.bootstrap_ci(x, 1000, seed=5, key="other")
    assert stats.bootstrap_ci([3.0, 3.0, 3.0]) == (3.0, 3.0)
    assert stats.bootstrap_ci([3.0]) == (None, None)
    # the percentile bootstrap of the mean by hand, same generator
    rng = stats.group_rng(5, "g")
    arr = np.array(x)
    means = arr[rng.integers(0, len(arr), size=(1000, len(arr)))].mean(axis=1)
    assert a == pytest.approx(tuple(np.quantile(means, [0.025, 0.975])))


@pytest.mark.parametrize("n", [2, 7, 300, 999])
def test_bootstrap_below_normal_from_n_is_the_one_matrix_bootstrap(n: int) -> None:
    # drawn in blocks, the CI equals the one from a single resamples x n index matrix
    x = np.random.default_rng(n).lognormal(3, 1, n)
    rng = stats.group_rng(11, "k")
    means = x[rng.integers(0, n, size=(2000, n))].mean(axis=1)
    alpha = (1 - 0.95) / 2  # as the library computes it (not exactly 0.025)
    expected = tuple(float(q) for q in np.quantile(means, [alpha, 1 - alpha]))
    assert stats.bootstrap_ci(x, 2000, seed=11, key="k") == expected
    assert stats.bootstrap_ci(x, 2000, seed=11, key="k", normal_from_n=n + 1) == expected


def test_bootstrap_from_normal_from_n_is_the_normal_interval() -> None:
    x = np.random.default_rng(1).normal(50, 5, 1500)
    half = stats.Z95 * x.std(ddof=1) / np.sqrt(len(x))
    lo, hi = stats.bootstrap_ci(x, 2000, seed=11, key="k")
    assert (lo, hi) == pytest.approx((x.mean() - half, x.mean() + half), rel=1e-12)
    # and it is where the bootstrap lands, within the bootstrap's Monte Carlo error
    blo, bhi = stats.bootstrap_ci(x, 2000, seed=11, key="k", normal_from_n=len(x) + 1)
    assert abs(blo - lo) < 0.15 * half and abs(bhi - hi) < 0.15 * half
    assert stats.bootstrap_ci(x, normal_from_n=len(x))[0] == pytest.approx(lo, rel=1e-12)


def test_wilson_known_values() -> None:
    lo, hi = stats.wilson_ci(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.27753, abs=1e-5)
    lo, hi = stats.wilson_ci(5, 10)
    assert lo == pytest.approx(0.23659, abs=1e-5) and hi == pytest.approx(0.76341, abs=1e-5)
    lo, hi = stats.wilson_ci(17, 150)
    assert lo == pytest.approx(0.071974, abs=1e-5) and hi == pytest.approx(0.174003, abs=1e-5)
    assert stats.wilson_ci(0, 0) == (None, None)


def test_holm_known_values() -> None:
    # sorted 0.01, 0.03, 0.04 -> 3 * 0.01, max(0.03, 2 * 0.03), max(0.06, 1 * 0.04)
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert stats.holm([0.5, None, 0.9]) == [pytest.approx(1.0), None, pytest.approx(1.0)]
    assert stats.holm([0.2, 0.01]) == pytest.approx([0.2, 0.02])


def test_cliffs_delta_hand_computed() -> None:
    # 9 pairs: x > y once (3 > 2), x < y six times, two ties -> (1 - 6) / 9
    assert stats.cliffs_delta([1, 2, 3], [2, 3, 4]) == pytest.approx(-5 / 9)
    assert stats.cliffs_delta([5, 6], [1, 2]) == 1.0
    assert stats.cliffs_magnitude(-5 / 9) == "large"
    assert stats.cliffs_magnitude(0.2) == "small"
    assert stats.cliffs_magnitude(0.1) == "negligible"
    assert stats.cliffs_magnitude(0.4) == "medium"
    assert stats.cliffs_delta([], [1]) is None


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cliffs_delta_equals_the_pairwise_definition(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 20, 300).astype(float)  # many ties
    y = np.append(rng.integers(5, 25, 170).astype(float), [np.nan, np.inf])
    finite = y[np.isfinite(y)]
    pairwise = float(np.sign(x[:, None] - finite[None, :]).mean())
    assert stats.cliffs_delta(x, y) == pairwise


def test_iqr_fences_and_mann_whitney() -> None:
    f = stats.iqr_fences([1, 2, 3, 4, 100])
    assert (f["q1"], f["q3"], f["lower"], f["upper"]) == (2.0, 4.0, -1.0, 7.0)
    assert stats.iqr_fences([1, 2, 3]) is None
    c = stats.compare_two([1, 2, 3], [4, 5, 6])
    assert c["mw_u"] == 0.0
    assert c["mw_p"] == pytest.approx(0.1)  # exact: 2 of 20 arrangements are as extreme
    assert c["cliffs_delta"] == -1.0
    assert c["welch_t"] == pytest.approx(-3 / math.sqrt(2 / 3))
    single = stats.compare_two([1.0], [2.0, 3.0])
    assert single["mw_p"] is None and single["welch_p"] is None


# ---------------------------------------------------------------------------------------------
# compute_statistics on small hand-made frames
# ---------------------------------------------------------------------------------------------


def _frames(runs: list[dict], agents: list[dict] | None = None) -> tuple[pd.DataFrame, ...]:
    key = ("study", "source", "config_id", "scenario", "run_index")
    base = {"study": "t", "source": "mabench", "scenario": "s1"}
    runs = [{**base, **r} for r in runs]
    if agents is None:
        agents = [
            {**{k: r[k] for k in key}, "agent": a} for r in runs for a in ("collector", "insight")
        ]
    else:
        agents = [{**base, **a} for a in agents]
    return (
        to_table(runs, RUNS_SCHEMA).to_pandas(),
        to_table(agents, AGENTS_SCHEMA).to_pandas(),
        to_table([], CALLS_SCHEMA).to_pandas(),
    )


def _run(cid: str, i: int, seed_eff: float, true_eff: float | None = None, **kw) -> dict:
    return {
        "config_id": cid,
        "run_index": i,
        "n_agents": 2,
        "seed_efficiency": seed_eff,
        "seed_speedup": seed_eff / 50,
        "true_efficiency": true_eff,
        "true_speedup": None if true_eff is None else true_eff / 50,
        "concurrent_wall_s": 36.0,
        "concurrent_sum_s": 36.0 * seed_eff / 50,
        "solo_sum_s": None if true_eff is None else 36.0 * true_eff / 50,
        "contention_legacy": seed_eff < 75,
        **kw,
    }


SMALL = {"bootstrap": {"resamples": 300, "seed": 3}, "study": "t"}


def test_single_run_single_config_does_not_crash() -> None:
    runs, agents, calls = _frames([_run("c1", 1, 90.0)])
    s = stats.compute_statistics(runs, agents, calls, SMALL)
    rs = s.run_summary
    row = rs[(rs.level == "config") & (rs.metric == "seed_efficiency")].iloc[0]
    assert row["n"] == 1 and row["mean"] == 90.0
    assert pd.isna(row["ci_low"]) and pd.isna(row["std"])
    assert s.meta["primary_metric"] == "seed_efficiency"
    assert s.comparisons.empty
    assert s.seed_vs_true.empty
    assert s.paired.empty
    rec = s.recommendations[s.recommendations["kind"] == "best"].iloc[0]
    assert rec["config_id"] == "c1" and pd.isna(rec["runner_up"])


def test_all_null_true_efficiency_and_hand_computed_groups() -> None:
    runs, agents, calls = _frames(
        [_run("c1", 1, 80.0), _run("c1", 2, 90.0), _run("c2", 1, 70.0), _run("c2", 2, 100.0)]
    )
    s = stats.compute_statistics(runs, agents, calls, SMALL)
    rs = s.run_summary.set_index(["level", "group", "metric"])
    assert rs.loc[("overall", "all", "seed_efficiency"), "mean"] == 85.0
    assert rs.loc[("config", "c1", "seed_efficiency"), "mean"] == 85.0
    assert rs.loc[("config", "c2", "seed_efficiency"), "std"] == pytest.approx(math.sqrt(450))
    assert rs.loc[("overall", "all", "true_efficiency"), "n"] == 0
    assert pd.isna(rs.loc[("overall", "all", "true_efficiency"), "mean"])
    cont = s.contention.set_index(["level", "group", "rule"])
    legacy = cont.loc[("overall", "all", "legacy")]
    assert (legacy["n"], legacy["flagged"], legacy["rate_pct"]) == (4, 1, 25.0)
    lo, hi = stats.wilson_ci(1, 4)
    assert legacy["ci_low_pct"] == pytest.approx(100 * lo)
    assert legacy["ci_high_pct"] == pytest.approx(100 * hi)
    assert cont.loc[("overall", "all", "ttft"), "n"] == 0
    top = s.top_configs
    assert list(top["config_id"]) == ["c1", "c2"]  # equal means: tie broken by id
    assert list(s.top_runs["run_index"])[:1] == [2]  # 100 % is c2 run 2
    assert s.top_runs.iloc[0]["config_id"] == "c2"


def test_true_efficiency_is_primary_and_seed_vs_true_by_hand() -> None:
    runs, agents, calls = _frames(
        [_run("c1", 1, 98.0, 80.0), _run("c1", 2, 96.0, 70.0), _run("c2", 1, 99.0, 60.0)]
    )
    s = stats.compute_statistics(runs, agents, calls, SMALL)
    assert s.meta["primary_metric"] == "true_efficiency"
    svt = s.seed_vs_true.set_index("group").loc["all"]
    assert svt["mean_diff_pp"] == pytest.approx((18 + 26 + 39) / 3)
    assert svt["runs_seed_above_true"] == 3
    assert svt["best_config_seed"] == "c2" and svt["best_config_true"] == "c1"
    pc = s.per_config.set_index("config_id")
    assert pc.loc["c1", "seed_minus_true_pp"] == pytest.approx(22.0)


def test_paired_solo_vs_concurrent_by_hand() -> None:
    runs, _, calls = _frames([_run("c1", i, 95.0, 80.0) for i in range(1, 7)])
    agents = []
    for i in range(1, 7):
        agents.append(
            {
                "config_id": "c1",
                "run_index": i,
                "agent": "collector",
                "solo_tps": 40.0,
                "concurrent_tps": 40.0 - i,
                "solo_wall_s": 10.0,
                "concurrent_wall_s": 12.0,
                "slowdown": 1.2,
            }
        )
    _, agents_df, _ = _frames([_run("c1", i, 95.0, 80.0) for i in range(1, 7)], agents)
    s = stats.compute_statistics(runs, agents_df, calls, SMALL)
    p = s.paired.set_index(["agent", "quantity"])
    tps = p.loc[("collector", "server tok/s")]
    assert tps["n"] == 6
    assert tps["mean_diff"] == pytest.approx(-3.5)  # mean of -1..-6
    assert tps["rel_change_pct"] == pytest.approx(-3.5 / 40 * 100)
    assert tps["wilcoxon_p"] == pytest.approx(0.03125)  # exact, all 6 differences negative
    wall = p.loc[("collector", "agent wall time")]
    assert wall["mean_diff"] == pytest.approx(2.0)
    assert wall["ci_low"] == wall["ci_high"] == pytest.approx(2.0)
    slow = s.agent_summary
    row = slow[(slow.level == "overall") & (slow.metric == "slowdown")].iloc[0]
    assert row["mean"] == pytest.approx(1.2)


def test_cost_model_by_hand() -> None:
    runs, _, calls = _frames([_run("c1", 1, 100.0, 50.0)])
    agents = [
        {"config_id": "c1", "run_index": 1, "agent": a, "concurrent_eval_count": 360}
        for a in ("collector", "insight")
    ]
    _, agents_df, _ = _frames([_run("c1", 1, 100.0, 50.0)], agents)
    settings = {
        **SMALL,
        "cost": {"instance": "vm", "price_per_hour_usd": 0.10, "executions_per_month": 1000},
    }
    s = stats.compute_statistics(runs, agents_df, calls, settings)
    c = s.cost.set_index("scope").loc["all"]
    assert c["concurrent_executions_per_hour"] == pytest.approx(100.0)  # 3600 / 36 s
    assert c["concurrent_instances"] == 1
    assert c["concurrent_monthly_cost_usd"] == pytest.approx(73.0)  # 0.10 x 730 h
    assert c["concurrent_cost_per_1k_usd"] == pytest.approx(73.0)
    assert c["concurrent_cost_per_1k_marginal_usd"] == pytest.approx(1.0)  # 0.10 / 100 x 1000
    assert c["tokens_per_s"] == pytest.approx(720 / 36)
    # solo sum 36 s x 50 / 50 = 36 s: true efficiency 50 % means no saving at all
    assert c["sequential_marginal_saving_pct"] == pytest.approx(0.0)
    assert c["seed_sequential_marginal_saving_pct"] == pytest.approx(50.0)


def test_slo_and_outliers() -> None:
    runs, agents, calls = _frames(
        [_run("c1", i, e, e - 10) for i, e in enumerate([95, 96, 97, 98, 60], start=1)]
    )
    settings = {
        **SMALL,
        "slo": {
            "min_true_efficiency_pct": 80,
            "max_p95_ttft_ms": 1000,
            "max_contention_rate_pct": 5,
        },
    }
    s = stats.compute_statistics(runs, agents, calls, settings)
    slo = s.slo.set_index(["scope", "check"])
    eff = slo.loc[("all", "efficiency")]
    assert eff["observed"] == pytest.approx((85 + 86 + 87 + 88 + 50) / 5)
    assert not eff["passed"]
    assert pd.isna(slo.loc[("all", "p95_ttft"), "observed"])
    out = s.outliers
    assert list(out["run_index"].unique()) == [5]
    assert set(out["metric"]) == {"true_efficiency", "seed_efficiency"}


def test_synthetic_study_statistics() -> None:
    f = build(seed=1)
    s = stats.compute_statistics(f["runs"], f["agents"], f["calls"], SMALL)
    assert s.meta["has_solo"] and s.meta["has_calls"] and s.meta["has_ttft_split"]
    assert s.meta["topologies"] == ["dedicated", "shared"]
    assert set(s.comparisons["by"]) == {"scenario", "topology"}
    # three scenario pairs per metric, Holm within each metric
    sc = s.comparisons[
        (s.comparisons.by == "scenario") & (s.comparisons.metric == "true_efficiency")
    ]
    assert len(sc) == 3
    assert list(sc["mw_p_holm"]) == pytest.approx(stats.holm(list(sc["mw_p"])))
    split = s.ttft_split[(s.ttft_split.level == "overall")].set_index("phase")
    for phase in ("solo", "concurrent"):
        r = split.loc[phase]
        assert r["load_ms"] + r["prefill_ms"] + r["rest_ms"] == pytest.approx(r["ttft_ms"])


def test_write_and_load_round_trip(tmp_path) -> None:
    f = build(seed=2)
    s = stats.compute_statistics(f["runs"], f["agents"], f["calls"], SMALL)
    paths = stats.write_statistics(s, tmp_path)
    assert (tmp_path / "summary.json").exists()
    back = stats.load_statistics(tmp_path)
    assert back.meta["n_runs"] == 30
    pd.testing.assert_frame_equal(
        back.run_summary.reset_index(drop=True),
        s.run_summary.reset_index(drop=True),
        check_dtype=False,
    )
    assert set(paths) >= {"run_summary", "summary", "contention", "cost", "slo"}


def test_resolve_settings_accepts_study_config_shape() -> None:
    s = stats.resolve_settings(
        {
            "study": "x",
            "report": {"title": "T", "reference": ["tr114"], "slo": {"max_p95_ttft_ms": 10}},
            "contention": {"ttft_ms": 500},
        }
    )
    assert s["title"] == "T" and s["reference"] == ["tr114"]
    assert s["slo"]["max_p95_ttft_ms"] == 10 and s["slo"]["min_true_efficiency_pct"] == 90.0
    assert s["contention"]["ttft_ms"] == 500 and s["contention"]["legacy_speedup"] == 1.5
