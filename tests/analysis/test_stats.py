"""compute_statistics on small hand-made frames and the synthetic study."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from synthetic import build

from mabench.analysis import stats
from mabench.analysis.tables import AGENTS_SCHEMA, CALLS_SCHEMA, RUNS_SCHEMA, to_table
from mabench.steps import legacy

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


SMALL = {"study": "t"}


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
    # one config: runs are the replicates (t test conditional on the config, 5 df); with the
    # config as the unit there is a single difference, so nothing can be shown at that level
    assert tps["n_configs"] == 1
    assert tps["p"] == pytest.approx(sps.ttest_1samp([-1, -2, -3, -4, -5, -6], 0).pvalue)
    assert pd.isna(tps["config_p"]) and tps["wilcoxon_min_p"] == 1.0
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


def test_slo_verdicts_are_one_sided_tests_and_point_estimates_never_list_a_config() -> None:
    # c1 sits clearly below the 80 % target; c2's mean misses it but its runs scatter
    # widely, so only c1's failure is shown by the one-sided t test
    trues = {"c1": [60.0, 61.0, 62.0, 61.0], "c2": [95.0, 50.0, 90.0, 70.0], "c3": [90.0] * 4}
    rows = [
        _run(cid, i, 95.0, e + 0.1 * i)
        for cid, values in trues.items()
        for i, e in enumerate(values, start=1)
    ]
    runs, agents, calls = _frames(rows)
    settings = {**SMALL, "slo": {"min_true_efficiency_pct": 80}}
    s = stats.compute_statistics(runs, agents, calls, settings)
    eff = s.slo[s.slo["check"] == "efficiency"].set_index("scope")
    for cid in ("c1", "c2"):
        x = np.array([e + 0.1 * i for i, e in enumerate(trues[cid], start=1)])
        upper = x.mean() + sps.t.ppf(0.95, 3) * x.std(ddof=1) / 2
        assert eff.loc[cid, "bound"] == pytest.approx(upper)
        assert not eff.loc[cid, "passed"]  # both point estimates miss the target
    assert eff.loc["c1", "failure_shown"] and not eff.loc["c2", "failure_shown"]
    assert eff.loc["c1", "test"] == "one-sided t, the config's runs"
    assert eff.loc["all", "test"] == "one-sided t, config means"
    assert s.slo.set_index(["scope", "check"]).loc[("c1", "p95_ttft"), "test"] == "point estimate"
    avoid = s.recommendations[s.recommendations["kind"] == "avoid"].set_index("config_id")
    assert "c2" not in avoid.index
    assert "fails SLO efficiency (one-sided test" in avoid.loc["c1", "reasons"]
    assert s.slo_configs.set_index("scope").loc["c1", "failures_shown"] == "efficiency"


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
    assert list(sc["p_holm"]) == pytest.approx(stats.holm(list(sc["p"])))
    assert list(sc["rank_p_holm"]) == pytest.approx(stats.holm(list(sc["rank_p"])))
    # the config is the unit: Welch's t on the config means of each scenario
    means = f["runs"].groupby("config_id")["true_efficiency"].mean()
    row = sc[(sc.a == "baseline_vs_chimera") & (sc.b == "chimera_hetero")].iloc[0]
    a, b = means[["test001", "test004"]], means[["test007", "test011"]]
    assert (row["n_a"], row["n_b"], row["n_runs_a"]) == (2, 2, 10)
    assert row["p"] == pytest.approx(sps.ttest_ind(a, b, equal_var=False).pvalue)
    assert row["design"] == "unpaired" and row["unit"] == "config"
    # the same config (options, scenario) measured on both topologies is paired
    topo = s.comparisons[
        (s.comparisons.by == "topology") & (s.comparisons.metric == "true_efficiency")
    ].iloc[0]
    assert topo["design"] == "paired" and topo["n_pairs"] == 1
    assert topo["diff"] == pytest.approx(means["test108"] - means["test108s"])
    # tail latency pools every inter-token gap of the phase
    lat = s.latency.set_index(["level", "group", "phase", "metric"])
    conc = f["calls"][f["calls"].phase == "concurrent"]
    gaps = np.concatenate(list(conc["itl_ms"]))
    itl = lat.loc[("overall", "all", "concurrent", "ITL")]
    assert itl["n"] == len(gaps) and itl["p99"] == pytest.approx(np.percentile(gaps, 99))
    # a P99 from fewer than 100 values is not estimated: only its order-statistic lower bound
    ttft = lat.loc[("config", "test004", "concurrent", "TTFT")]
    values = np.sort(
        f["calls"]
        .query("phase == 'concurrent' and config_id == 'test004'")["client_ttft_ms"]
        .dropna()
    )
    assert ttft["n"] < 100 and pd.isna(ttft["p99"])
    assert ttft["p99_lower_95"] == values[int(ttft["p99_lower_rank"]) - 1]
    tpot = lat.loc[("config", "test004", "solo", "TPOT")]
    solo4 = f["calls"][(f["calls"].phase == "solo") & (f["calls"].config_id == "test004")]
    assert tpot["max"] == pytest.approx(solo4["tpot_ms"].max())
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


def test_reference_or_legacy_tables_must_be_passed_in() -> None:
    runs, agents, calls = _frames([_run("c1", 1, 90.0), _run("c1", 2, 91.0)])
    with pytest.raises(ValueError, match=r"reference dataset\(s\) tr114 .*legacy_data"):
        stats.compute_statistics(runs, agents, calls, {**SMALL, "reference": ["tr114"]})
    tr110_runs = runs.assign(source="tr110")
    with pytest.raises(ValueError, match=r"TR110 import .*legacy_data"):
        stats.compute_statistics(tr110_runs, agents, calls, SMALL)
    with_ref = stats.compute_statistics(
        runs,
        agents,
        calls,
        {**SMALL, "reference": ["tr114"]},
        legacy=legacy.legacy_data(runs, stats.resolve_settings({"reference": ["tr114"]})),
    )
    assert set(with_ref.reference) == {
        "tr114_config",
        "tr114_scenario",
        "tr114_metrics",
        "tr114_claims",
    }
    assert with_ref.meta["legacy_methodology"] == {}


def test_contention_rates_have_the_config_as_the_unit() -> None:
    f = build(seed=2)
    s = stats.compute_statistics(f["runs"], f["agents"], f["calls"], SMALL)
    row = s.contention.query("level == 'overall' and rule == 'throughput'").iloc[0]
    rates = f["runs"].groupby("config_id")["contention_throughput"].mean() * 100
    assert row["n_configs"] == len(rates)
    assert row["config_rate_pct"] == pytest.approx(rates.mean())
    half = sps.t.ppf(0.975, len(rates) - 1) * rates.std(ddof=1) / math.sqrt(len(rates))
    assert row["config_ci_low_pct"] == pytest.approx(max(0.0, rates.mean() - half))
    assert row["config_ci_high_pct"] == pytest.approx(min(100.0, rates.mean() + half))
    assert 0 < row["config_ci_coverage_pct"] < 100


def test_slo_attainment_counts_failed_calls_and_the_slo_checks_it() -> None:
    f = build(seed=5, evil=True)  # one failed call in test004, run 1
    settings = {**SMALL, "slo": {"goodput_ttft_ms": 400.0, "goodput_tpot_ms": 100.0}}
    s = stats.compute_statistics(f["runs"], f["agents"], f["calls"], settings)
    g = s.slo_attainment.set_index(["level", "group", "phase"])
    calls = f["calls"][f["calls"].phase == "concurrent"]
    good = calls["error_kind"].isna() & (calls["client_ttft_ms"] <= 400) & (calls["tpot_ms"] <= 100)
    row = g.loc[("overall", "all", "concurrent")]
    assert (row["n_calls"], row["n_good"]) == (len(calls), int(good.sum()))
    assert row["n_failed"] == int(calls["error_kind"].notna().sum())
    assert row["slo_attainment_pct"] == pytest.approx(100 * good.mean())
    # good calls per second: over each run's phase, first request sent to last answer
    per_run = calls.groupby(["config_id", "run_index"])
    seconds = (per_run["t_done_s"].max() - per_run["t_sent_s"].min()).sum()
    assert row["phase_s"] == pytest.approx(seconds)
    assert row["good_per_s"] == pytest.approx(good.sum() / seconds)
    per_config = good.groupby(calls["config_id"]).mean() * 100
    half = sps.t.ppf(0.975, len(per_config) - 1) * per_config.std(ddof=1) / math.sqrt(6)
    assert row["n_configs"] == len(per_config) == 6
    assert row["config_attainment_pct"] == pytest.approx(per_config.mean())
    assert row["config_ci_low_pct"] == pytest.approx(max(0.0, per_config.mean() - half))
    assert row["config_ci_high_pct"] == pytest.approx(min(100.0, per_config.mean() + half))
    check = s.slo.set_index(["scope", "check"]).loc[("all", "slo_attainment")]
    assert check["observed"] == pytest.approx(100 * good.mean())
    assert check["passed"] == (100 * good.mean() >= 90.0)


def test_topologies_of_the_same_configs_are_compared_paired() -> None:
    runs = []
    for base, shift, gap in (("c1", 0.0, 20.0), ("c2", 5.0, 17.0), ("c3", -4.0, 24.0)):
        for i, noise in enumerate((0.4, -0.3, 0.1), start=1):
            runs.append(_run(f"{base}-dual", i, 95.0, 80.0 + shift + noise, topology="dedicated"))
            runs.append(_run(f"{base}-shared", i, 95.0, 80 - gap + shift, topology="shared"))
    agents = [
        {
            **{k: r[k] for k in ("config_id", "run_index")},
            "agent": a,
            "options_json": r["config_id"][:2],
        }
        for r in runs
        for a in ("collector", "insight")
    ]
    frames = _frames(runs, agents)
    s = stats.compute_statistics(*frames, SMALL)
    row = s.comparisons[
        (s.comparisons.by == "topology") & (s.comparisons.metric == "true_efficiency")
    ].iloc[0]
    means = frames[0].groupby("config_id")["true_efficiency"].mean()
    diffs = [means[f"{b}-dual"] - means[f"{b}-shared"] for b in ("c1", "c2", "c3")]
    assert row["design"] == "paired" and row["n_pairs"] == 3
    assert row["diff"] == pytest.approx(np.mean(diffs))
    assert row["p"] == pytest.approx(sps.ttest_1samp(diffs, 0).pvalue)
    assert row["rank_min_p"] == 0.25  # three pairs: the signed-rank test cannot reach 0.05
