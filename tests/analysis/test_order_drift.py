"""Phase order and drift: the order-balanced estimate, the order effect and the drift slope,
pinned against statsmodels' OLS with the config as a fixed effect."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf

from mabench.analysis.stats.estimators import within_slope
from mabench.analysis.stats.order import (
    CONCURRENT_FIRST_ONLY,
    SOLO_FIRST_ONLY,
    drift,
    order_balance,
)

SOLO, CONC = "solo,concurrent", "concurrent,solo"


def _runs() -> pd.DataFrame:
    """c1: 3 solo-first runs near 90 and 2 concurrent-first near 80 (5 runs, alternate);
    c2: 2 and 2 around 60 with an order effect of 4 pp; c3: solo first only."""
    start = pd.Timestamp("2026-01-01T00:00:00Z")
    rows = [
        ("c1", SOLO, 89.0),
        ("c1", CONC, 81.0),
        ("c1", SOLO, 91.0),
        ("c1", CONC, 79.0),
        ("c1", SOLO, 90.0),
        ("c2", SOLO, 63.0),
        ("c2", CONC, 58.0),
        ("c2", SOLO, 61.0),
        ("c2", CONC, 58.0),
        ("c3", SOLO, 40.0),
        ("c3", SOLO, 42.0),
    ]
    return pd.DataFrame(
        {
            "config_id": [r[0] for r in rows],
            "phase_order": [r[1] for r in rows],
            "true_efficiency": [r[2] for r in rows],
            "seed_efficiency": [r[2] + 1 for r in rows],
            "started_at": [start + pd.Timedelta(minutes=10 * i) for i in range(len(rows))],
        }
    )


def _ols(df: pd.DataFrame, term: str, formula: str) -> tuple[float, float, float, float]:
    fit = smf.ols(formula, data=df).fit()
    low, high = fit.conf_int().loc[term]
    return float(fit.params[term]), float(low), float(high), float(fit.pvalues[term])


def test_within_slope_is_ols_with_a_dummy_per_group() -> None:
    rng = np.random.default_rng(7)
    df = pd.DataFrame(
        {"g": np.repeat(["a", "b", "c"], 6), "x": rng.uniform(0, 5, 18), "y": rng.normal(0, 1, 18)}
    )
    df["y"] += 0.3 * df["x"] + df["g"].map({"a": 0.0, "b": 5.0, "c": -2.0})
    fit = within_slope(df["y"], df["x"], df["g"])
    slope, low, high, p = _ols(df, "x", "y ~ x + C(g)")
    assert (fit["slope"], fit["low"], fit["high"], fit["p"]) == pytest.approx((slope, low, high, p))
    assert fit["df"] == 18 - 3 - 1


def test_within_slope_is_null_without_variation_or_degrees_of_freedom() -> None:
    assert within_slope([1.0, 2.0], [1.0, 1.0], ["a", "a"])["slope"] is None
    two = within_slope([1.0, 3.0], [0.0, 1.0], ["a", "a"])
    assert two["slope"] == pytest.approx(2.0) and two["low"] is None


def test_order_balance_per_config() -> None:
    table = order_balance(_runs())
    true = table[table["metric"] == "true_efficiency"].set_index("group")
    c1 = true.loc["c1"]
    assert (c1["n_solo_first"], c1["n_concurrent_first"]) == (3, 2)
    assert c1["balanced_mean"] == pytest.approx((90.0 + 80.0) / 2)
    # the plain mean of five runs leans towards the order measured three times
    assert _runs().query("config_id == 'c1'")["true_efficiency"].mean() == pytest.approx(86.0)
    c1_runs = (
        _runs()
        .query("config_id == 'c1'")
        .assign(first=lambda d: (d["phase_order"] == SOLO).astype(float))
    )
    effect, low, high, p = _ols(c1_runs, "first", "true_efficiency ~ first")
    assert (c1["order_effect"], c1["order_effect_low"], c1["order_effect_high"]) == pytest.approx(
        (effect, low, high)
    )
    assert c1["p"] == pytest.approx(p)
    # the balanced mean is the average of the two order means: half the effect's standard error
    assert c1["balanced_high"] - c1["balanced_low"] == pytest.approx((high - low) / 2)
    c3 = true.loc["c3"]
    assert c3["note"] == SOLO_FIRST_ONLY and pd.isna(c3["balanced_mean"])
    assert pd.isna(c3["order_effect"])


def test_study_order_effect_has_the_config_as_a_fixed_effect() -> None:
    runs = _runs().assign(first=lambda d: (d["phase_order"] == SOLO).astype(float))
    overall = order_balance(runs).query("level == 'overall' and metric == 'true_efficiency'")
    row = overall.iloc[0]
    effect, low, high, p = _ols(runs, "first", "true_efficiency ~ first + C(config_id)")
    assert (row["order_effect"], row["order_effect_low"], row["order_effect_high"]) == (
        pytest.approx((effect, low, high))
    )
    assert row["p"] == pytest.approx(p)
    assert row["n_configs_both_orders"] == 2
    assert row["balanced_mean"] == pytest.approx((85.0 + (62.0 + 58.0) / 2) / 2)
    assert row["balanced_low"] < row["balanced_mean"] < row["balanced_high"]


def test_order_balance_says_when_a_config_has_one_order_and_skips_missing_metrics() -> None:
    runs = _runs().assign(phase_order=CONC).drop(columns="seed_efficiency")
    table = order_balance(runs)
    assert set(table["metric"]) == {"true_efficiency"}
    assert set(table.query("level == 'config'")["note"]) == {CONCURRENT_FIRST_ONLY}
    assert table.query("level == 'overall'")["order_effect"].isna().all()


def test_drift_slope_per_hour_with_the_config_as_a_fixed_effect() -> None:
    runs = _runs()
    hours = (runs["started_at"] - runs["started_at"].min()).dt.total_seconds() / 3600
    base = runs["config_id"].map({"c1": 85.0, "c2": 60.0, "c3": 41.0})
    noise = np.resize([0.4, -0.3, 0.1, -0.2], len(runs))
    runs["true_efficiency"] = base + noise - 12.0 * hours  # 12 pp lost per hour
    table = drift(runs).set_index("metric")
    true = table.loc["true_efficiency"]
    slope, low, high, p = _ols(
        runs.assign(hours=hours), "hours", "true_efficiency ~ hours + C(config_id)"
    )
    assert (true["slope_pp_per_h"], true["slope_low"], true["slope_high"]) == pytest.approx(
        (slope, low, high)
    )
    assert true["p"] == pytest.approx(p)
    assert true["span_h"] == pytest.approx(100 / 60)
    assert bool(true["drift_flagged"]) is (high < 0)
    assert bool(true["drift_flagged"]) is True
    assert bool(table.loc["seed_efficiency", "drift_flagged"]) is False


def test_drift_is_empty_without_start_times() -> None:
    assert drift(_runs().drop(columns="started_at")).empty


def test_runs_without_an_order_or_a_start_time_are_left_out() -> None:
    runs = _runs().astype({"phase_order": object})
    runs.loc[0, "phase_order"] = None
    runs.loc[1, "started_at"] = pd.NaT
    c1 = order_balance(runs).query("group == 'c1' and metric == 'true_efficiency'").iloc[0]
    assert (c1["n_solo_first"], c1["n_concurrent_first"]) == (2, 2)
    assert drift(runs).set_index("metric").loc["true_efficiency", "n_runs"] == len(runs) - 1
