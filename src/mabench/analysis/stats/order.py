"""Phase order and drift: what the order of a run's two phases and the time it ran did to its
efficiency (true and seed), with the config as the unit.

- :func:`order_balance`: per config, the mean of the solo-first runs and of the
  concurrent-first runs, their average (the order-balanced estimate: each order weighs half,
  however many runs it has) and their difference (the order effect), each with its t-interval
  on the config's pooled within-order spread; a config measured in one order only gets no
  estimate, and says so. Overall: the study's order effect, a slope with the config as a fixed
  effect, and the average of the configs' balanced estimates.
- :func:`drift`: efficiency against each run's start time, a slope per hour with the config as
  a fixed effect, flagged when its interval excludes zero.

May import: :mod:`mabench.analysis.stats.estimators` and ``validity`` (the order labels).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from mabench.analysis.stats.estimators import LEVEL, within_slope
from mabench.analysis.stats.validity import CONCURRENT_FIRST, SOLO_FIRST, solo_concurrent_order

#: the run metrics whose order effect and drift are reported (percent: effects are in pp)
METRICS = ("true_efficiency", "interference_efficiency", "seed_efficiency")
BOTH_ORDERS, SOLO_FIRST_ONLY, CONCURRENT_FIRST_ONLY, NO_RUNS = (
    "both orders",
    "solo first only: no order-balanced estimate",
    "concurrent first only: no order-balanced estimate",
    "no runs with a value",
)


def _ordered(runs: pd.DataFrame, metric: str) -> pd.DataFrame:
    """config_id, the metric as ``y`` and ``solo_first`` (1/0) of every run with a finite value
    and one of the two orders."""
    if metric not in runs or "phase_order" not in runs:
        return pd.DataFrame(columns=["config_id", "y", "solo_first"])
    y = pd.to_numeric(runs[metric], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    order = solo_concurrent_order(runs["phase_order"]).astype(str).to_numpy()
    keep = np.isfinite(y) & np.isin(order, [SOLO_FIRST, CONCURRENT_FIRST])
    return pd.DataFrame(
        {
            "config_id": runs["config_id"].to_numpy()[keep],
            "y": y[keep],
            "solo_first": (order[keep] == SOLO_FIRST).astype(float),
        }
    )


def _note(n_solo_first: int, n_concurrent_first: int) -> str:
    if n_solo_first and n_concurrent_first:
        return BOTH_ORDERS
    if n_solo_first:
        return SOLO_FIRST_ONLY
    return CONCURRENT_FIRST_ONLY if n_concurrent_first else NO_RUNS


def _config_row(g: pd.DataFrame, level: float) -> dict[str, Any]:
    """One config: both orders' means, the balanced estimate and the order effect."""
    first = g.loc[g["solo_first"] == 1, "y"]
    last = g.loc[g["solo_first"] == 0, "y"]
    row: dict[str, Any] = {
        "n_solo_first": len(first),
        "n_concurrent_first": len(last),
        "mean_solo_first": float(first.mean()) if len(first) else None,
        "mean_concurrent_first": float(last.mean()) if len(last) else None,
        "note": _note(len(first), len(last)),
    }
    row.update(balanced_mean=None, balanced_low=None, balanced_high=None)
    row.update(order_effect=None, order_effect_low=None, order_effect_high=None, df=None, p=None)
    if not (len(first) and len(last)):
        return row
    effect = within_slope(g["y"], g["solo_first"], np.zeros(len(g)), level)
    balanced = (row["mean_solo_first"] + row["mean_concurrent_first"]) / 2
    row.update(balanced_mean=balanced, order_effect=effect["slope"], df=effect["df"])
    row["p"] = effect["p"]
    if effect["low"] is not None:
        half = (effect["high"] - effect["low"]) / 2
        row.update(order_effect_low=effect["low"], order_effect_high=effect["high"])
        row.update(balanced_low=balanced - half / 2, balanced_high=balanced + half / 2)
    return row


def _overall_balanced(data: pd.DataFrame, level: float) -> dict[str, Any]:
    """The average of the configs' balanced estimates (configs with both orders) and its
    interval conditional on those configs: each config x order cell's mean, the pooled
    within-cell variance s² on N - cells degrees of freedom, Var = s² Σ (1/n₁ + 1/n₂) / (4k²)."""
    both = data.groupby("config_id")["solo_first"].transform("nunique") == 2
    cells = data[both].groupby(["config_id", "solo_first"])["y"]
    out: dict[str, Any] = {"balanced_mean": None, "balanced_low": None, "balanced_high": None}
    k = int(data.loc[both, "config_id"].nunique())
    out["n_configs_both_orders"] = k
    if not k:
        return out
    means, counts = cells.mean(), cells.size()
    out["balanced_mean"] = float(means.groupby(level="config_id").mean().mean())
    df = int(counts.sum()) - len(counts)
    if df < 1:
        return out
    resid = data[both]["y"] - cells.transform("mean")
    s2 = float((resid**2).sum()) / df
    se = math.sqrt(s2 * float((1 / counts).sum()) / (4 * k * k))
    half = float(sps.t.ppf(0.5 + level / 2, df)) * se
    out.update(balanced_low=out["balanced_mean"] - half, balanced_high=out["balanced_mean"] + half)
    return out


def _overall_row(data: pd.DataFrame, level: float) -> dict[str, Any]:
    """The study: the order effect with the config as a fixed effect (only configs measured in
    both orders inform it) and the average of the configs' balanced estimates."""
    n_first, n_last = int(data["solo_first"].sum()), int(len(data) - data["solo_first"].sum())
    effect = within_slope(data["y"], data["solo_first"], data["config_id"], level)
    return {
        "n_solo_first": n_first,
        "n_concurrent_first": n_last,
        "mean_solo_first": float(data.loc[data["solo_first"] == 1, "y"].mean())
        if n_first
        else None,
        "mean_concurrent_first": float(data.loc[data["solo_first"] == 0, "y"].mean())
        if n_last
        else None,
        "note": _note(n_first, n_last),
        **_overall_balanced(data, level),
        "order_effect": effect["slope"],
        "order_effect_low": effect["low"],
        "order_effect_high": effect["high"],
        "df": effect["df"],
        "p": effect["p"],
    }


def order_balance(runs: pd.DataFrame, level: float = LEVEL) -> pd.DataFrame:
    """Per metric (true and seed efficiency), overall and per config: the solo-first and
    concurrent-first means, the order-balanced estimate and the order effect (solo first minus
    concurrent first, pp) with their intervals. Metrics no run recorded are left out."""
    rows: list[dict[str, Any]] = []
    for metric in METRICS:
        data = _ordered(runs, metric)
        if data.empty:
            continue
        rows.append({"level": "overall", "group": "all", "metric": metric})
        rows[-1].update(_overall_row(data, level))
        for cid, g in data.groupby("config_id", sort=True):
            rows.append(
                {"level": "config", "group": cid, "metric": metric, **_config_row(g, level)}
            )
    return pd.DataFrame(rows)


def _hours_since_start(runs: pd.DataFrame) -> np.ndarray:
    """Each run's start in hours after the study's first run started (NaN where unknown)."""
    if "started_at" not in runs:
        return np.full(len(runs), np.nan)
    started = pd.to_datetime(runs["started_at"], utc=True, errors="coerce")
    hours = (started - started.min()).dt.total_seconds() / 3600.0
    return hours.to_numpy(dtype=float, na_value=np.nan)


def drift(runs: pd.DataFrame, level: float = LEVEL) -> pd.DataFrame:
    """Per metric (true and seed efficiency): the slope of the runs' values against their start
    time (pp per hour) with the config as a fixed effect, its interval and test, and
    ``drift_flagged`` when the interval excludes zero. Metrics no run recorded are left out."""
    hours = _hours_since_start(runs)
    rows: list[dict[str, Any]] = []
    for metric in METRICS:
        if metric not in runs:
            continue
        y = pd.to_numeric(runs[metric], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        keep = np.isfinite(y) & np.isfinite(hours)
        if not keep.any():
            continue
        fit = within_slope(y[keep], hours[keep], runs["config_id"].to_numpy()[keep], level)
        span = float(hours[keep].max() - hours[keep].min())
        flagged = fit["low"] is not None and (fit["low"] > 0 or fit["high"] < 0)
        rows.append(
            {
                "metric": metric,
                "n_runs": fit["n"],
                "n_configs": fit["n_groups"],
                "span_h": span,
                "slope_pp_per_h": fit["slope"],
                "slope_low": fit["low"],
                "slope_high": fit["high"],
                "df": fit["df"],
                "p": fit["p"],
                "drift_over_span_pp": None if fit["slope"] is None else fit["slope"] * span,
                "drift_flagged": bool(flagged),
            }
        )
    return pd.DataFrame(rows)


__all__ = ["METRICS", "drift", "order_balance"]
