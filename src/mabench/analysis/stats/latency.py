"""Latency distributions and SLO attainment: the tail a user of the agents waits through.

Per phase (solo, concurrent), overall, per scenario and per config: P50, P90, P95, P99 and the
maximum of time to first token, inter-token latency (every gap between two text chunks of a
call, pooled), time per output token (one value per call) and end-to-end latency (one value
per call). A P99 needs :data:`MIN_P99_VALUES` values: from fewer it is null and only its
order-statistic 95 % lower bound (``p99_lower_95``, the ``p99_lower_rank``-th smallest value)
is given. SLO attainment (what the study settings call goodput): the share of calls that
met the study's TTFT and TPOT targets (% of calls; a failed call never meets them, and a call
of fewer than 2 tokens, no TPOT, is judged on its TTFT alone), and beside it the good calls per
second of the phase (what vLLM and AIPerf call goodput): good calls / Σ over the runs of the
phase's span (first request sent to last answer).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from mabench.analysis.stats.estimators import quantile_lower_bound, t_interval, tail, wilson_ci

#: per-call latency column -> (name in the report, one value per call or a list per call)
LATENCY_METRICS: dict[str, tuple[str, bool]] = {
    "client_ttft_ms": ("TTFT", False),
    "itl_ms": ("ITL", True),
    "tpot_ms": ("TPOT", False),
    "client_wall_ms": ("end-to-end", False),
}
PHASES = ("solo", "concurrent")
#: the fewest values a P99 is estimated from (below, only its order-statistic lower bound)
MIN_P99_VALUES = 100


LEVELS: tuple[tuple[str, str | None], ...] = (
    ("overall", None),
    ("scenario", "scenario"),
    ("config", "config_id"),
)


def _groups(calls: pd.DataFrame, key: str | None) -> list[tuple[str, np.ndarray]]:
    """(group name, boolean row mask) per group of ``key`` (all rows for None)."""
    if key is None:
        return [("all", np.ones(len(calls), dtype=bool))]
    col = calls[key].astype(object)
    return [(str(g), (col == g).to_numpy()) for g in sorted(col.dropna().unique())]


class _Columns:
    """The latency columns as arrays: a float per call, or every gap of every call with the
    row it came from (so that a group's gaps are one mask away)."""

    def __init__(self, calls: pd.DataFrame) -> None:
        self.per_call: dict[str, np.ndarray] = {}
        self.flat: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for col, (_, is_list) in LATENCY_METRICS.items():
            if col not in calls:
                continue
            if not is_list:
                self.per_call[col] = pd.to_numeric(calls[col], errors="coerce").to_numpy(float)
                continue
            lists = [np.asarray(v, dtype=float) if v is not None else None for v in calls[col]]
            lengths = np.array([0 if v is None else len(v) for v in lists])
            values = [v for v in lists if v is not None and len(v)]
            flat = np.concatenate(values) if values else np.empty(0)
            self.flat[col] = (flat, np.repeat(np.arange(len(lists)), lengths))

    def values(self, col: str, rows: np.ndarray) -> np.ndarray | None:
        if col in self.per_call:
            return self.per_call[col][rows]
        if col in self.flat:
            flat, row_of = self.flat[col]
            return flat[rows[row_of]]
        return None


def _tail_with_p99_bound(values: np.ndarray) -> dict[str, Any]:
    """:func:`tail`, its P99 null below :data:`MIN_P99_VALUES` values, and the P99's
    order-statistic 95 % lower bound with its rank."""
    t = tail(values)
    if t["n"] < MIN_P99_VALUES:
        t["p99"] = None
    t["p99_lower_95"], t["p99_lower_rank"] = quantile_lower_bound(values, 0.99)
    return t


def latency(calls: pd.DataFrame, config_scenario: Mapping[str, str]) -> pd.DataFrame:
    """Tail percentiles of each latency per level, group and phase (successful calls)."""
    if calls.empty:
        return pd.DataFrame()
    cols = _Columns(calls)
    phase = calls["phase"].to_numpy(dtype=object)
    rows = []
    for level, key in LEVELS:
        for name, mask in _groups(calls, key):
            for ph in PHASES:
                rows_mask = mask & (phase == ph)
                if not rows_mask.any():
                    continue
                for col, (label, _) in LATENCY_METRICS.items():
                    vals = cols.values(col, rows_mask)
                    if vals is None:
                        continue
                    t = _tail_with_p99_bound(vals)
                    if t["n"] == 0:
                        continue  # not measured (ITL: records of schema 1)
                    rows.append(
                        {
                            "level": level,
                            "group": name,
                            "scenario": name
                            if level == "scenario"
                            else config_scenario.get(name)
                            if level == "config"
                            else None,
                            "phase": ph,
                            "metric": label,
                            "column": col,
                            "unit": "ms",
                            "n_calls": int(rows_mask.sum()),
                            **t,
                        }
                    )
    return pd.DataFrame(rows)


def _good(calls: pd.DataFrame, ttft_ms: float, tpot_ms: float) -> np.ndarray:
    """Whether each call met both targets (failed calls and calls without a TTFT do not)."""
    ok = calls["error_kind"].isna().to_numpy() if "error_kind" in calls else np.ones(len(calls))
    ttft = pd.to_numeric(calls["client_ttft_ms"], errors="coerce").to_numpy(float)
    tpot = pd.to_numeric(calls["tpot_ms"], errors="coerce").to_numpy(float)
    tpot_ok = np.where(np.isnan(tpot), True, tpot <= tpot_ms)
    return ok.astype(bool) & (ttft <= ttft_ms) & tpot_ok


def _phase_spans(calls: pd.DataFrame) -> np.ndarray:
    """Per call, the span (s) of its run's phase, first request sent to last answer, given on
    the first call of each run and phase and 0 on the others (so that a sum over any calls of
    whole runs is the sum of their phases' spans)."""
    key_cols = [c for c in ("study", "config_id", "run_index", "phase") if c in calls]
    sent = pd.to_numeric(calls["t_sent_s"], errors="coerce")
    done = pd.to_numeric(calls["t_done_s"], errors="coerce").fillna(sent)
    keys = calls[key_cols].astype(str).agg("\x1f".join, axis=1)
    span = done.groupby(keys).transform("max") - sent.groupby(keys).transform("min")
    first = ~keys.duplicated()
    return np.where(first.to_numpy(), span.fillna(0.0).to_numpy(float), 0.0)


def _config_attainment(good: np.ndarray, configs: np.ndarray) -> dict[str, Any]:
    """The config as the unit: the mean of the configs' attainments (%) and the t-interval of
    those attainments, clipped to [0, 100] (null below 2 configs)."""
    rates = pd.Series(good.astype(float)).groupby(configs).mean() * 100
    lo, hi = t_interval(rates)
    return {
        "n_configs": len(rates),
        "config_attainment_pct": float(rates.mean()) if len(rates) else None,
        "config_ci_low_pct": None if lo is None else max(0.0, lo),
        "config_ci_high_pct": None if hi is None else min(100.0, hi),
    }


def slo_attainment(calls: pd.DataFrame, slo: Mapping[str, Any]) -> pd.DataFrame:
    """Per level, group and phase: the share of calls (failed ones included) that met the TTFT
    and TPOT targets of ``slo`` with its Wilson interval over calls (``slo_attainment_pct``),
    the configs' mean attainment with the t-interval of the configs' attainments (the config as
    the unit), and the good calls per second of the phases (``good_per_s``, over ``phase_s``
    seconds)."""
    if calls.empty:
        return pd.DataFrame()
    ttft_ms, tpot_ms = float(slo["goodput_ttft_ms"]), float(slo["goodput_tpot_ms"])
    good = _good(calls, ttft_ms, tpot_ms)
    failed = calls["error_kind"].notna().to_numpy() if "error_kind" in calls else good & False
    spans = _phase_spans(calls)
    configs = calls["config_id"].astype(str).to_numpy()
    phase = calls["phase"].to_numpy(dtype=object)
    rows = []
    for level, key in LEVELS:
        for name, mask in _groups(calls, key):
            for ph in PHASES:
                m = mask & (phase == ph)
                n, k = int(m.sum()), int(good[m].sum())
                if not n:
                    continue
                lo, hi = wilson_ci(k, n)
                seconds = float(spans[m].sum())
                by_config = _config_attainment(good[m], configs[m])
                rows.append(
                    {
                        "level": level,
                        "group": name,
                        "phase": ph,
                        "n_calls": n,
                        "n_failed": int(failed[m].sum()),
                        "n_good": k,
                        "slo_attainment_pct": 100.0 * k / n,
                        "ci_low_pct": 100 * lo,
                        "ci_high_pct": 100 * hi,
                        **by_config,
                        "phase_s": seconds,
                        "good_per_s": k / seconds if seconds > 0 else None,
                        "ttft_target_ms": ttft_ms,
                        "tpot_target_ms": tpot_ms,
                    }
                )
    return pd.DataFrame(rows)


__all__ = ["LATENCY_METRICS", "MIN_P99_VALUES", "latency", "slo_attainment"]
