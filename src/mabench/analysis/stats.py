"""Statistics over a study's ``runs``, ``agents`` and ``calls`` tables.

One entry point, :func:`compute_statistics`, turns the three tables (as DataFrames, see
:mod:`mabench.analysis.tables`) and the study's report settings into a :class:`Statistics`: every number
the technical report prints, as DataFrames. :func:`write_statistics` writes them as Parquet plus a
``summary.json`` under ``results/<study>/stats/``; :func:`load_statistics` reads them back (the
report renders from those files only, so changing a template never recomputes statistics).

Definitions (also in the report's formula appendix):

- descriptive: n, mean, median, sample std (ddof 1), CV = 100 std / mean (only when every
  value is positive), min, max and
  percentiles P5/P25/P50/P75/P95 (numpy's linear interpolation);
- CI of the mean: percentile bootstrap, ``resamples`` resamples, seeded from the settings and
  the group's name (so one group's CI does not depend on which other groups exist);
  from ``normal_from_n`` values on (setting, default 1,000), the normal approximation
  mean ± z·s/√n that the bootstrap converges to, at O(n) cost; null when n < 2;
- proportions: Wilson score interval (95 %);
- scenario (and topology) comparisons: two-sided Mann-Whitney U and Welch's t test per pair,
  Holm-corrected within each metric; effect size Cliff's delta;
- outliers: IQR rule (below Q1 - 1.5 IQR or above Q3 + 1.5 IQR over all runs);
- paired solo vs concurrent per agent: differences concurrent - solo of the same agent in the
  same run, bootstrap CI of the mean difference, Wilcoxon signed-rank test when n >= 6.
"""

from __future__ import annotations

import hashlib
import json
import math
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from scipy import stats as sps

from mabench import __version__

Z95 = 1.959963984540054
HOURS_PER_MONTH = 730.0
PERCENTILES = (5, 25, 50, 75, 95)
WILCOXON_MIN_N = 6
TOP_N = 5
#: bootstrap indices drawn at a time (8 MB of int64): memory stays bounded whatever the
#: sample size, instead of resamples x n (1.3 GB for 80,000 values)
BOOTSTRAP_BLOCK_VALUES = 2**20

DEFAULT_SETTINGS: dict[str, Any] = {
    "study": "study",
    "title": "Concurrent multi-agent LLM performance",
    "description": "",
    "reference": [],
    "cost": {
        "instance": "2-vCPU cloud VM",
        "price_per_hour_usd": 0.10,
        "executions_per_month": 1_000_000,
    },
    "slo": {
        "min_true_efficiency_pct": 90.0,
        "max_p95_ttft_ms": 2000.0,
        "max_contention_rate_pct": 5.0,
    },
    "contention": {"legacy_speedup": 1.5, "ttft_ms": 3000.0, "throughput_pct": 70.0},
    "bootstrap": {"resamples": 2000, "seed": 12345, "normal_from_n": 1000},
    "methodology": {},
}

#: run-level metrics summarised per config / scenario / overall (and topology), with units
RUN_METRICS: dict[str, str] = {
    "seed_efficiency": "%",
    "true_efficiency": "%",
    "seed_speedup": "x",
    "true_speedup": "x",
    "concurrent_wall_s": "s",
    "solo_sum_s": "s",
    "coordination_overhead_ms": "ms",
    "throughput_delta": "tok/s",
    "ttft_delta_ms": "ms",
}
#: per-agent metrics (one value per agent and run)
AGENT_METRICS: dict[str, str] = {
    "concurrent_tps": "tok/s",
    "solo_tps": "tok/s",
    "concurrent_client_tps": "tok/s",
    "solo_client_tps": "tok/s",
    "concurrent_ttft_ms": "ms",
    "solo_ttft_ms": "ms",
    "slowdown": "x",
    "concurrent_wall_s": "s",
    "solo_wall_s": "s",
    "concurrent_load_ms": "ms",
    "solo_load_ms": "ms",
    "concurrent_prompt_eval_ms": "ms",
    "solo_prompt_eval_ms": "ms",
}
#: per-call metrics (one value per successful call), summarised per phase
CALL_METRICS: dict[str, str] = {
    "client_ttft_ms": "ms",
    "load_ms": "ms",
    "prompt_eval_ms": "ms",
    "ttft_rest_ms": "ms",
    "client_wall_ms": "ms",
    "server_tps": "tok/s",
    "client_decode_tps": "tok/s",
}
CONTENTION_RULES: dict[str, str] = {
    "legacy": "contention_legacy",
    "ttft": "contention_ttft",
    "throughput": "contention_throughput",
}
#: solo vs concurrent pairs for the paired analysis
PAIRS: dict[str, tuple[str, str, str]] = {
    "server tok/s": ("solo_tps", "concurrent_tps", "tok/s"),
    "client decode tok/s": ("solo_client_tps", "concurrent_client_tps", "tok/s"),
    "TTFT": ("solo_ttft_ms", "concurrent_ttft_ms", "ms"),
    "agent wall time": ("solo_wall_s", "concurrent_wall_s", "s"),
}
COMPARED_METRICS = ("seed_efficiency", "true_efficiency")
METHODOLOGY_FIELDS = (
    "hostname",
    "cpu_model",
    "cpu_count",
    "gpus",
    "server_version",
    "mabench_version",
    "git_commit",
    "model",
    "backend",
    "coordinator",
    "topology",
    "phase_order",
    "n_agents",
    "n_servers",
    "isolation_verified",
)


# ---------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        elif value is not None:
            out[key] = value
    return out


def resolve_settings(raw: Mapping[str, Any] | Any | None = None) -> dict[str, Any]:
    """Report settings with defaults filled in.

    Accepts the flat dict (``study``, ``title``, ``reference``, ``cost``, ``slo``,
    ``contention``, ``bootstrap``, ``methodology``), a study config dict (whose ``report:``
    block holds title/reference/cost/slo/bootstrap), or a :class:`mabench.config.Study`.
    """
    if raw is None:
        return json.loads(json.dumps(DEFAULT_SETTINGS))
    if not isinstance(raw, Mapping):  # a Study object
        data: dict[str, Any] = {
            "study": getattr(raw, "name", None),
            "description": getattr(raw, "description", None),
            "contention": dict(getattr(raw, "contention", {}) or {}),
            **dict(getattr(raw, "report", {}) or {}),
        }
    else:
        data = dict(raw)
        report = data.pop("report", None)
        if isinstance(report, Mapping):
            data = _merge(data, report)
    settings = _merge(json.loads(json.dumps(DEFAULT_SETTINGS)), data)
    settings["reference"] = list(settings.get("reference") or [])
    return settings


# ---------------------------------------------------------------------------------------------
# Small statistics, each testable on its own
# ---------------------------------------------------------------------------------------------


def _values(x: Iterable[Any]) -> np.ndarray:
    """Finite float values of x (None, NaN and non-numbers dropped)."""
    if isinstance(x, np.ndarray) and x.dtype.kind == "f":
        arr = x
    elif isinstance(x, pd.Series) and x.dtype.kind in "fiu":
        arr = x.to_numpy(dtype=float, na_value=np.nan)
    else:
        series = pd.Series(list(x), dtype="object")
        arr = pd.to_numeric(series, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    return arr[np.isfinite(arr)]


def group_rng(seed: int, key: str) -> np.random.Generator:
    """A generator seeded from the study seed and a group's name."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(key.encode())])


def bootstrap_ci(
    values: Iterable[Any],
    resamples: int = 2000,
    seed: int = 12345,
    key: str = "",
    level: float = 0.95,
    normal_from_n: int = DEFAULT_SETTINGS["bootstrap"]["normal_from_n"],
) -> tuple[float | None, float | None]:
    """CI of the mean; (None, None) when fewer than 2 values.

    Below ``normal_from_n`` values: the percentile bootstrap, ``resamples`` resamples from
    :func:`group_rng`, drawn in blocks of at most :data:`BOOTSTRAP_BLOCK_VALUES` indices (the
    generator yields the same numbers in the same order, so the CI is the one a single
    ``resamples x n`` draw gives, in bounded memory). From ``normal_from_n``
    values on: mean ± z·s/√n (s the sample standard deviation), the interval the percentile
    bootstrap converges to for large n; it differs from a bootstrap by about the bootstrap's
    own Monte Carlo error, and costs O(n) instead of ``resamples x n``.
    """
    x = _values(values)
    n = len(x)
    if n < 2:
        return None, None
    if np.all(x == x[0]):
        return float(x[0]), float(x[0])
    alpha = (1 - level) / 2
    if n >= normal_from_n:
        z = Z95 if level == 0.95 else float(sps.norm.ppf(1 - alpha))
        mean = float(x.mean())
        half = z * float(x.std(ddof=1)) / math.sqrt(n)
        return mean - half, mean + half
    rng = group_rng(seed, key)
    resamples = int(resamples)
    means = np.empty(resamples)
    block = max(1, BOOTSTRAP_BLOCK_VALUES // n)
    for lo in range(0, resamples, block):
        hi = min(lo + block, resamples)
        means[lo:hi] = x[rng.integers(0, n, size=(hi - lo, n))].mean(axis=1)
    q_lo, q_hi = np.quantile(means, [alpha, 1 - alpha])
    return float(q_lo), float(q_hi)


def describe(
    values: Iterable[Any],
    resamples: int = 2000,
    seed: int = 12345,
    key: str = "",
    normal_from_n: int = DEFAULT_SETTINGS["bootstrap"]["normal_from_n"],
) -> dict[str, Any]:
    """n, mean, median, std, cv, min, max, p5..p95, ci_low, ci_high (None where undefined)."""
    x = _values(values)
    n = len(x)
    out: dict[str, Any] = {"n": n}
    if n == 0:
        for k in ("mean", "median", "std", "cv", "min", "max", "ci_low", "ci_high"):
            out[k] = None
        for p in PERCENTILES:
            out[f"p{p}"] = None
        return out
    mean = float(x.mean())
    std = float(x.std(ddof=1)) if n > 1 else None
    out.update(
        mean=mean,
        median=float(np.median(x)),
        std=std,
        # CV only on a ratio scale: undefined when values can be zero or negative (deltas).
        cv=None if std is None or x.min() <= 0 else 100.0 * std / mean,
        min=float(x.min()),
        max=float(x.max()),
    )
    for p, v in zip(PERCENTILES, np.percentile(x, PERCENTILES), strict=True):
        out[f"p{p}"] = float(v)
    out["ci_low"], out["ci_high"] = bootstrap_ci(
        x, resamples, seed, key, normal_from_n=normal_from_n
    )
    return out


def wilson_ci(k: int, n: int, z: float = Z95) -> tuple[float | None, float | None]:
    """Wilson score interval for k successes out of n (as proportions in [0, 1])."""
    if n <= 0:
        return None, None
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def holm(pvalues: Iterable[float | None]) -> list[float | None]:
    """Holm-Bonferroni adjusted p-values (missing p-values stay missing, not counted)."""
    p = [None if v is None or not np.isfinite(v) else float(v) for v in pvalues]
    present = [(v, i) for i, v in enumerate(p) if v is not None]
    m = len(present)
    adjusted: list[float | None] = [None] * len(p)
    running = 0.0
    for rank, (v, i) in enumerate(sorted(present)):
        running = max(running, min(1.0, (m - rank) * v))
        adjusted[i] = running
    return adjusted


def cliffs_delta(x: Iterable[Any], y: Iterable[Any]) -> float | None:
    """Cliff's delta: P(X > Y) - P(X < Y) over all pairs.

    Counted, for every x, as the y below it minus the y above it in the sorted y: exact, in
    O((n + m) log m) time and O(n + m) memory (no n x m matrix of pairs).
    """
    a, b = _values(x), np.sort(_values(y))
    if len(a) == 0 or len(b) == 0:
        return None
    below = np.searchsorted(b, a, side="left").sum(dtype=np.int64)
    above = (len(b) - np.searchsorted(b, a, side="right")).sum(dtype=np.int64)
    return float((below - above) / (len(a) * len(b)))


def cliffs_magnitude(delta: float | None) -> str | None:
    """Romano et al. (2006) thresholds: 0.147, 0.33, 0.474."""
    if delta is None:
        return None
    d = abs(delta)
    if d < 0.147:
        return "negligible"
    if d < 0.33:
        return "small"
    if d < 0.474:
        return "medium"
    return "large"


def iqr_fences(values: Iterable[Any], k: float = 1.5) -> dict[str, float] | None:
    x = _values(values)
    if len(x) < 4:
        return None
    q1, q3 = np.percentile(x, [25, 75])
    iqr = q3 - q1
    return {"q1": float(q1), "q3": float(q3), "lower": q1 - k * iqr, "upper": q3 + k * iqr}


def compare_two(a: Iterable[Any], b: Iterable[Any]) -> dict[str, Any]:
    """Mann-Whitney U and Welch's t (two-sided) plus Cliff's delta; p null when n < 2."""
    x, y = _values(a), _values(b)
    out: dict[str, Any] = {
        "n_a": len(x),
        "n_b": len(y),
        "mean_a": float(x.mean()) if len(x) else None,
        "mean_b": float(y.mean()) if len(y) else None,
        "median_a": float(np.median(x)) if len(x) else None,
        "median_b": float(np.median(y)) if len(y) else None,
        "mw_u": None,
        "mw_p": None,
        "welch_t": None,
        "welch_p": None,
    }
    if len(x) >= 2 and len(y) >= 2:
        if np.ptp(np.concatenate([x, y])) > 0:
            mw = sps.mannwhitneyu(x, y, alternative="two-sided")
            out["mw_u"], out["mw_p"] = float(mw.statistic), float(mw.pvalue)
        else:
            out["mw_u"], out["mw_p"] = float(len(x) * len(y) / 2), 1.0
        if x.std(ddof=1) > 0 or y.std(ddof=1) > 0:
            w = sps.ttest_ind(x, y, equal_var=False)
            out["welch_t"], out["welch_p"] = float(w.statistic), float(w.pvalue)
    out["cliffs_delta"] = cliffs_delta(x, y)
    out["magnitude"] = cliffs_magnitude(out["cliffs_delta"])
    return out


# ---------------------------------------------------------------------------------------------
# The Statistics container
# ---------------------------------------------------------------------------------------------


@dataclass
class Statistics:
    """Every table the report prints. Each DataFrame is written as ``<field>.parquet``."""

    meta: dict[str, Any]
    run_summary: pd.DataFrame  # level, group, scenario, metric, unit, n, mean, ..., ci_high
    agent_summary: pd.DataFrame  # the same per agent (level, group, scenario, agent, metric)
    call_summary: pd.DataFrame  # the same per call and phase
    ttft_split: pd.DataFrame  # mean TTFT and its server split per level/group/phase
    contention: pd.DataFrame  # level, group, rule, n, flagged, rate_pct, ci_low_pct, ci_high_pct
    top_configs: pd.DataFrame
    bottom_configs: pd.DataFrame
    top_runs: pd.DataFrame
    bottom_runs: pd.DataFrame
    outliers: pd.DataFrame
    consistency: pd.DataFrame
    comparisons: pd.DataFrame
    paired: pd.DataFrame
    recommendations: pd.DataFrame
    cost: pd.DataFrame
    slo: pd.DataFrame
    slo_configs: pd.DataFrame  # one row per config: observed value and pass/fail per check
    seed_vs_true: pd.DataFrame  # per run paired seed - true efficiency, overall and by scenario
    limitations: pd.DataFrame  # item, value, detail: what limits the conclusions, computed
    per_config: pd.DataFrame
    methodology: pd.DataFrame
    inputs: pd.DataFrame
    reliability: pd.DataFrame = field(default_factory=pd.DataFrame)  # attempts and failures
    reference: dict[str, pd.DataFrame] = field(default_factory=dict)
    tr110: dict[str, pd.DataFrame] = field(default_factory=dict)

    def frames(self) -> dict[str, pd.DataFrame]:
        """Every table by its file stem (reference_*/tr110_* for the nested dicts)."""
        out = {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if isinstance(getattr(self, f.name), pd.DataFrame)
        }
        out.update({f"reference_{k}": v for k, v in self.reference.items()})
        out.update({f"tr110_{k}": v for k, v in self.tr110.items()})
        return out


# ---------------------------------------------------------------------------------------------
# Preparing the tables
# ---------------------------------------------------------------------------------------------


def _flag(series: pd.Series) -> pd.Series:
    """A nullable boolean column (object columns of True/False/None included)."""
    if series.dtype == bool:
        return series.astype("boolean").rename(None)
    values = [None if pd.isna(v) else bool(v) for v in series.astype(object)]
    return pd.Series(values, index=series.index, dtype="boolean")


def _run_topology(runs: pd.DataFrame, agents: pd.DataFrame) -> list[Any] | np.ndarray:
    """Each agent row's run topology (None where its run is not in ``runs``)."""
    keys = pd.MultiIndex.from_arrays([runs["config_id"], runs["run_index"]])
    wanted = pd.MultiIndex.from_arrays([agents["config_id"], agents["run_index"]])
    if keys.is_unique:  # one lookup for all rows
        pos = keys.get_indexer(wanted)
        values = runs["topology"].to_numpy(dtype=object)[pos]
        values[pos < 0] = None
        return values
    topo = dict(zip(keys, runs["topology"], strict=True))  # duplicates: the last run wins
    return [topo.get(k) for k in wanted]


def prepare(
    runs: pd.DataFrame, agents: pd.DataFrame, calls: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    runs = runs.copy()
    for col in CONTENTION_RULES.values():
        if col not in runs:
            runs[col] = None
        runs[col] = _flag(runs[col])
    for col in RUN_METRICS:
        if col not in runs:
            runs[col] = np.nan
        runs[col] = pd.to_numeric(runs[col], errors="coerce").astype(float)
    agents = agents.copy()
    for col in AGENT_METRICS:
        if col not in agents:
            agents[col] = np.nan
        agents[col] = pd.to_numeric(agents[col], errors="coerce").astype(float)
    scen = runs.drop_duplicates("config_id").set_index("config_id")["scenario"]
    if "topology" in runs:
        agents["topology"] = _run_topology(runs, agents)
    # successful calls only; filtering first copies the (largest) table once, not twice
    calls = calls[calls["error_kind"].isna()] if "error_kind" in calls else calls.copy()
    for col in CALL_METRICS:
        if col not in calls and col != "ttft_rest_ms":
            calls[col] = np.nan
    for col in (
        "client_ttft_ms",
        "load_ms",
        "prompt_eval_ms",
        "client_wall_ms",
        "server_tps",
        "client_decode_tps",
    ):
        calls[col] = pd.to_numeric(calls[col], errors="coerce").astype(float)
    calls["ttft_rest_ms"] = calls["client_ttft_ms"] - calls["load_ms"] - calls["prompt_eval_ms"]
    if not calls.empty and "scenario" not in calls:
        calls["scenario"] = calls["config_id"].map(scen)
    return runs, agents, calls


def primary_metric(runs: pd.DataFrame) -> str:
    """true_efficiency when the study measured a solo phase, else the seed formula."""
    if "true_efficiency" in runs and runs["true_efficiency"].notna().any():
        return "true_efficiency"
    return "seed_efficiency"


def _levels(df: pd.DataFrame, with_topology: bool) -> list[tuple[str, str | None]]:
    levels: list[tuple[str, str | None]] = [
        ("overall", None),
        ("scenario", "scenario"),
        ("config", "config_id"),
    ]
    if with_topology and "topology" in df and df["topology"].nunique(dropna=True) > 1:
        levels.append(("topology", "topology"))
    return levels


def _group_rows(df: pd.DataFrame, cols: list[str]) -> list[tuple[tuple[Any, ...], np.ndarray]]:
    """(key values, row positions in table order) of each group of ``cols``, in the order
    ``df.groupby(cols, sort=True)`` yields them, rows with a missing key left out: the
    groups of a large table without a sub-DataFrame each."""
    if not cols:
        return [((), np.arange(len(df)))]
    grouped = df.groupby(cols, sort=True)
    codes = grouped.ngroup().to_numpy(dtype=float, na_value=np.nan)
    codes = np.where(np.isnan(codes), -1, codes).astype(np.int64)
    order = np.argsort(codes, kind="stable")  # stable: table order within each group
    bounds = np.searchsorted(codes[order], np.arange(grouped.ngroups + 1))
    return [
        (key if isinstance(key, tuple) else (key,), order[bounds[i] : bounds[i + 1]])
        for i, key in enumerate(grouped.size().index)
    ]


def _summarise(
    df: pd.DataFrame,
    metrics: Mapping[str, str],
    config_scenario: Mapping[str, str],
    boot: Mapping[str, int],
    extra: tuple[str, ...] = (),
    with_topology: bool = True,
    keep_empty_overall: bool = True,
) -> pd.DataFrame:
    rows: list[dict[str, Any]] = []
    if df.empty:
        return pd.DataFrame(columns=["level", "group", "scenario", *extra, "metric", "unit", "n"])
    columns = {
        m: df[m].to_numpy(dtype=float, na_value=np.nan) for m in metrics if m in df
    }  # each metric as one float array, sliced per group
    for level, key in _levels(df, with_topology):
        for keys, positions in _group_rows(df, ([key] if key else []) + list(extra)):
            gname, ev = (keys[0], keys[1:]) if key else ("all", keys)
            for metric, unit in metrics.items():
                if metric not in columns:
                    continue
                vals = columns[metric][positions]
                if np.isnan(vals).all() and not (level == "overall" and keep_empty_overall):
                    continue
                tag = "|".join([level, str(gname), *map(str, ev), metric])
                d = describe(vals, boot["resamples"], boot["seed"], tag, boot["normal_from_n"])
                scen = (
                    gname
                    if level == "scenario"
                    else config_scenario.get(gname)
                    if level == "config"
                    else None
                )
                rows.append(
                    {
                        "level": level,
                        "group": str(gname),
                        "scenario": scen,
                        **dict(zip(extra, ev, strict=True)),
                        "metric": metric,
                        "unit": unit,
                        **d,
                    }
                )
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# The pieces of compute_statistics
# ---------------------------------------------------------------------------------------------


def _contention(runs: pd.DataFrame) -> pd.DataFrame:
    runs = runs.copy()
    measured = runs[["contention_ttft", "contention_throughput"]]
    any_flag = measured.fillna(False).any(axis=1)
    runs["contention_ttft_or_throughput"] = any_flag.where(measured.notna().any(axis=1), None)
    runs["contention_ttft_or_throughput"] = _flag(runs["contention_ttft_or_throughput"])
    rules = {**CONTENTION_RULES, "ttft_or_throughput": "contention_ttft_or_throughput"}
    rows = []
    for level, key in _levels(runs, with_topology=True):
        groups = [("all", runs)] if key is None else list(runs.groupby(key, sort=True))
        for gname, g in groups:
            for rule, col in rules.items():
                s = g[col].dropna()
                n, k = len(s), int(s.sum())
                lo, hi = wilson_ci(k, n)
                rows.append(
                    {
                        "level": level,
                        "group": str(gname),
                        "rule": rule,
                        "n": n,
                        "flagged": k if n else None,
                        "rate_pct": 100.0 * k / n if n else None,
                        "ci_low_pct": None if lo is None else 100 * lo,
                        "ci_high_pct": None if hi is None else 100 * hi,
                    }
                )
    return pd.DataFrame(rows)


def _ranked_configs(summary: pd.DataFrame, metrics: Iterable[str], top: bool) -> pd.DataFrame:
    rows = []
    for metric in metrics:
        cfg = summary[(summary["level"] == "config") & (summary["metric"] == metric)]
        cfg = cfg[cfg["n"] > 0].sort_values(["mean", "group"], ascending=[not top, True])
        for rank, (_, r) in enumerate(cfg.head(TOP_N).iterrows(), start=1):
            rows.append(
                {
                    "metric": metric,
                    "rank": rank,
                    "config_id": r["group"],
                    "scenario": r["scenario"],
                    "n": r["n"],
                    "mean": r["mean"],
                    "ci_low": r["ci_low"],
                    "ci_high": r["ci_high"],
                    "std": r["std"],
                    "min": r["min"],
                    "max": r["max"],
                }
            )
    return pd.DataFrame(rows)


def _ranked_runs(runs: pd.DataFrame, metrics: Iterable[str], top: bool) -> pd.DataFrame:
    rows = []
    for metric in metrics:
        r = runs[runs[metric].notna()].sort_values(
            [metric, "config_id", "run_index"], ascending=[not top, True, True]
        )
        for rank, (_, x) in enumerate(r.head(TOP_N).iterrows(), start=1):
            rows.append(
                {
                    "metric": metric,
                    "rank": rank,
                    "config_id": x["config_id"],
                    "scenario": x["scenario"],
                    "run_index": int(x["run_index"]),
                    "value": x[metric],
                    "seed_efficiency": x["seed_efficiency"],
                    "true_efficiency": x["true_efficiency"],
                    "seed_speedup": x["seed_speedup"],
                    "true_speedup": x["true_speedup"],
                    "contention_legacy": x["contention_legacy"],
                }
            )
    return pd.DataFrame(rows)


def _outliers(runs: pd.DataFrame, metrics: Iterable[str]) -> pd.DataFrame:
    rows = []
    for metric in metrics:
        fences = iqr_fences(runs[metric])
        if fences is None:
            continue
        values = runs[metric].astype(float)
        out = runs[(values < fences["lower"]) | (values > fences["upper"])]
        for cid, scen, run_index, value in zip(
            out["config_id"], out["scenario"], out["run_index"], out[metric], strict=True
        ):
            v = float(value)
            side = "low" if v < fences["lower"] else "high"
            rows.append(
                {
                    "metric": metric,
                    "config_id": cid,
                    "scenario": scen,
                    "run_index": int(run_index),
                    "value": v,
                    "side": side,
                    "distance": (fences["lower"] - v) if side == "low" else (v - fences["upper"]),
                    **fences,
                }
            )
    out = pd.DataFrame(rows)
    if not out.empty:
        out = out.sort_values(["metric", "distance"], ascending=[True, False]).reset_index(
            drop=True
        )
    return out


def _consistency(summary: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for metric in COMPARED_METRICS:
        cfg = summary[(summary["level"] == "config") & (summary["metric"] == metric)]
        cfg = cfg[cfg["std"].notna()]
        for scen, g in cfg.groupby("scenario", sort=True):
            worst = g.loc[g["cv"].idxmax()] if g["cv"].notna().any() else None
            rows.append(
                {
                    "metric": metric,
                    "scenario": scen,
                    "n_configs": len(g),
                    "mean_std": g["std"].mean(),
                    "mean_cv": g["cv"].mean(),
                    "median_cv": g["cv"].median(),
                    "max_cv": g["cv"].max(),
                    "config_max_cv": None if worst is None else worst["group"],
                }
            )
    return pd.DataFrame(rows)


def _comparisons(runs: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for by in ("scenario", "topology"):
        if by not in runs or runs[by].nunique(dropna=True) < 2:
            continue
        for metric in COMPARED_METRICS:
            groups = {k: g[metric].dropna() for k, g in runs.groupby(by, sort=True)}
            groups = {k: v for k, v in groups.items() if len(v) > 0}
            names = sorted(groups)
            family = []
            for i, a in enumerate(names):
                for b in names[i + 1 :]:
                    family.append(
                        {
                            "by": by,
                            "metric": metric,
                            "a": a,
                            "b": b,
                            **compare_two(groups[a], groups[b]),
                        }
                    )
            adj = holm([r["mw_p"] for r in family])
            adj_w = holm([r["welch_p"] for r in family])
            for r, p, pw in zip(family, adj, adj_w, strict=True):
                r["mw_p_holm"] = p
                r["welch_p_holm"] = pw
                r["significant"] = None if p is None else bool(p < 0.05)
            rows.extend(family)
    return pd.DataFrame(rows)


def _paired(agents: pd.DataFrame, boot: Mapping[str, int]) -> pd.DataFrame:
    rows = []
    names = sorted(agents["agent"].dropna().unique()) if not agents.empty else []
    for agent in [*names, "(all agents)"]:
        g = agents if agent == "(all agents)" else agents[agents["agent"] == agent]
        for label, (solo, conc, unit) in PAIRS.items():
            both = g[[solo, conc]].dropna()
            n = len(both)
            if n == 0:
                continue
            diff = (both[conc] - both[solo]).to_numpy(float)
            lo, hi = bootstrap_ci(
                diff,
                boot["resamples"],
                boot["seed"],
                f"paired|{agent}|{label}",
                normal_from_n=boot["normal_from_n"],
            )
            w_stat = w_p = None
            if n >= WILCOXON_MIN_N and np.any(diff != 0):
                try:
                    w = sps.wilcoxon(diff)
                    w_stat, w_p = float(w.statistic), float(w.pvalue)
                except ValueError:
                    pass
            mean_solo = float(both[solo].mean())
            rows.append(
                {
                    "agent": agent,
                    "quantity": label,
                    "solo_column": solo,
                    "concurrent_column": conc,
                    "unit": unit,
                    "n": n,
                    "mean_solo": mean_solo,
                    "mean_concurrent": float(both[conc].mean()),
                    "mean_diff": float(diff.mean()),
                    "ci_low": lo,
                    "ci_high": hi,
                    "rel_change_pct": None if mean_solo == 0 else 100 * diff.mean() / mean_solo,
                    "wilcoxon_stat": w_stat,
                    "wilcoxon_p": w_p,
                }
            )
    return pd.DataFrame(rows)


def _ttft_split(
    calls: pd.DataFrame, agents: pd.DataFrame, cfg_scen: Mapping[str, str]
) -> pd.DataFrame:
    """Mean client TTFT and its server-side split (load, prefill, rest) per level and phase."""
    rows = []
    if not calls.empty:
        src, basis = calls, "calls"
        frame = calls[["config_id", "scenario", "phase"]].assign(
            ttft=calls["client_ttft_ms"], load=calls["load_ms"], prefill=calls["prompt_eval_ms"]
        )
        parts = [
            ("solo", frame[frame["phase"] == "solo"]),
            ("concurrent", frame[frame["phase"] == "concurrent"]),
        ]
    else:
        src, basis = agents, "agents (mean per agent and run)"
        parts = [
            (
                phase,
                agents.assign(
                    ttft=agents[f"{phase}_ttft_ms"],
                    load=agents[f"{phase}_load_ms"],
                    prefill=agents[f"{phase}_prompt_eval_ms"],
                ),
            )
            for phase in ("solo", "concurrent")
        ]
    if src.empty:
        return pd.DataFrame()
    for phase, f in parts:
        f = f[f["ttft"].notna()]
        if f.empty:
            continue
        for level, key in (("overall", None), ("scenario", "scenario"), ("config", "config_id")):
            groups = [("all", f)] if key is None else list(f.groupby(key, sort=True))
            for gname, g in groups:
                split = g[["load", "prefill"]].notna().all(axis=1)
                gs = g[split]
                rows.append(
                    {
                        "level": level,
                        "group": str(gname),
                        "scenario": gname if level == "scenario" else cfg_scen.get(gname),
                        "phase": phase,
                        "basis": basis,
                        "n": len(g),
                        "ttft_ms": g["ttft"].mean(),
                        "n_split": len(gs),
                        "load_ms": gs["load"].mean() if len(gs) else None,
                        "prefill_ms": gs["prefill"].mean() if len(gs) else None,
                        "rest_ms": (gs["ttft"] - gs["load"] - gs["prefill"]).mean()
                        if len(gs)
                        else None,
                    }
                )
    return pd.DataFrame(rows)


def _seed_vs_true(runs: pd.DataFrame, boot: Mapping[str, int]) -> pd.DataFrame:
    """How far the seed formula is from true efficiency, run by run (both measured)."""
    both = runs[runs["seed_efficiency"].notna() & runs["true_efficiency"].notna()]
    rows = []
    if both.empty:
        return pd.DataFrame(rows)
    groups = [("overall", "all", both)]
    groups += [("scenario", str(k), g) for k, g in both.groupby("scenario", sort=True)]
    if "topology" in both and both["topology"].nunique() > 1:
        groups += [("topology", str(k), g) for k, g in both.groupby("topology", sort=True)]
    for level, name, g in groups:
        diff = (g["seed_efficiency"] - g["true_efficiency"]).to_numpy(float)
        lo, hi = bootstrap_ci(
            diff,
            boot["resamples"],
            boot["seed"],
            f"seed_vs_true|{name}",
            normal_from_n=boot["normal_from_n"],
        )
        cfg = g.groupby("config_id")[["seed_efficiency", "true_efficiency"]].mean()
        rho = None
        if (
            len(cfg) >= 3
            and cfg["seed_efficiency"].nunique() > 1
            and cfg["true_efficiency"].nunique() > 1
        ):
            rho = float(sps.spearmanr(cfg["seed_efficiency"], cfg["true_efficiency"]).statistic)
        best_seed = cfg["seed_efficiency"].idxmax()
        best_true = cfg["true_efficiency"].idxmax()
        rows.append(
            {
                "level": level,
                "group": name,
                "n": len(g),
                "mean_seed": float(g["seed_efficiency"].mean()),
                "mean_true": float(g["true_efficiency"].mean()),
                "mean_diff_pp": float(diff.mean()),
                "ci_low": lo,
                "ci_high": hi,
                "runs_seed_above_true": int((diff > 0).sum()),
                "n_configs": len(cfg),
                "config_rank_spearman": rho,
                "best_config_seed": best_seed,
                "best_config_true": best_true,
                "same_best_config": best_seed == best_true,
            }
        )
    return pd.DataFrame(rows)


def _slo_configs(slo: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for scope, g in slo.groupby("scope", sort=False):
        row: dict[str, Any] = {"scope": scope}
        verdicts = []
        for _, r in g.iterrows():
            row[f"{r['check']}_observed"] = r["observed"]
            row[f"{r['check']}_passed"] = r["passed"]
            if r["passed"] is not None and not pd.isna(r["passed"]):
                verdicts.append(bool(r["passed"]))
        row["checks_evaluated"] = len(verdicts)
        row["all_passed"] = all(verdicts) if verdicts else None
        rows.append(row)
    return pd.DataFrame(rows)


def _limitations(
    runs: pd.DataFrame,
    agents: pd.DataFrame,
    calls: pd.DataFrame,
    summary: pd.DataFrame,
    metric: str,
) -> pd.DataFrame:
    per_cfg = runs.groupby("config_id").size()
    cfg = summary[(summary["level"] == "config") & (summary["metric"] == metric)]
    width = (cfg["ci_high"] - cfg["ci_low"]).dropna()
    rows: list[dict[str, Any]] = [
        {
            "item": "runs per config (min)",
            "value": float(per_cfg.min()),
            "detail": str(per_cfg.idxmin()),
        },
        {
            "item": "runs per config (max)",
            "value": float(per_cfg.max()),
            "detail": str(per_cfg.idxmax()),
        },
        {
            "item": "configs with fewer than 2 runs (no CI)",
            "value": float((per_cfg < 2).sum()),
            "detail": "",
        },
        {
            "item": f"median 95 % CI width of a config's mean {metric} (pp)",
            "value": float(width.median()) if len(width) else None,
            "detail": "",
        },
        {
            "item": f"widest 95 % CI of a config's mean {metric} (pp)",
            "value": float(width.max()) if len(width) else None,
            "detail": str(cfg.loc[width.idxmax(), "group"]) if len(width) else "",
        },
    ]
    not_measured = {
        "solo phase (true speedup, true efficiency, slowdown)": runs["solo_sum_s"].notna().any(),
        "per-call records (timeline, per-call TTFT percentiles)": not calls.empty,
        "server-side TTFT split (load, prompt eval)": bool(
            agents[["concurrent_load_ms", "concurrent_prompt_eval_ms"]].notna().any().any()
        ),
        "TTFT contention rule": runs["contention_ttft"].notna().any(),
        "throughput contention rule": runs["contention_throughput"].notna().any(),
        "isolation check (models unloaded before each run)": bool(
            "isolation_verified" in runs and runs["isolation_verified"].notna().any()
        ),
        "hardware description (CPU, GPU)": bool(
            "cpu_model" in runs and runs["cpu_model"].notna().any()
        ),
        "server version": bool(
            "server_version" in runs
            and runs["server_version"].fillna("").astype(str).str.len().gt(0).any()
        ),
        "call errors": bool("n_errors" in runs and runs["n_errors"].notna().any()),
    }
    for what, measured in not_measured.items():
        if not measured:
            rows.append({"item": "not measured", "value": None, "detail": what})
    return pd.DataFrame(rows)


def _agent_options(agents: pd.DataFrame) -> dict[str, str]:
    """Per config: ``agent: options_json`` of each agent row of the config's first run, in
    table order, '; '-joined (grouped once, not one mask over the agents table per config)."""
    if agents.empty:
        return {}
    a = agents[["config_id", "run_index", "agent", "options_json"]]
    first = a[a["run_index"] == a.groupby("config_id")["run_index"].transform("min")]
    return {
        str(cid): "; ".join(
            f"{agent}: {options}"
            for agent, options in zip(g["agent"], g["options_json"], strict=True)
        )
        for cid, g in first.groupby("config_id", sort=False)
    }


def _per_config(runs: pd.DataFrame, agents: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    rows = []
    agent_options = _agent_options(agents)
    for cid, g in runs.groupby("config_id", sort=True):
        options = agent_options.get(str(cid))

        def flagged(col: str, g: pd.DataFrame = g) -> int | None:
            s = g[col].dropna()
            return int(s.sum()) if len(s) else None

        rows.append(
            {
                "config_id": cid,
                "scenario": g["scenario"].iloc[0],
                "topology": ";".join(sorted(g["topology"].dropna().astype(str).unique()))
                if "topology" in g
                else None,
                "model": ";".join(sorted(g["model"].dropna().astype(str).unique()))
                if "model" in g
                else None,
                "agent_options": options,
                "n_runs": len(g),
                "seed_efficiency": g["seed_efficiency"].mean(),
                "true_efficiency": g["true_efficiency"].mean(),
                "seed_speedup": g["seed_speedup"].mean(),
                "true_speedup": g["true_speedup"].mean(),
                "concurrent_wall_s": g["concurrent_wall_s"].mean(),
                "contention_legacy": flagged("contention_legacy"),
                "contention_ttft": flagged("contention_ttft"),
                "contention_throughput": flagged("contention_throughput"),
                "n_errors": pd.to_numeric(g.get("n_errors"), errors="coerce").sum(min_count=1)
                if "n_errors" in g
                else None,
            }
        )
    out = pd.DataFrame(rows)
    out["seed_minus_true_pp"] = out["seed_efficiency"] - out["true_efficiency"]
    cfg = summary[summary["level"] == "config"]
    for metric, prefix in (("seed_efficiency", "seed"), ("true_efficiency", "true")):
        m = cfg[cfg["metric"] == metric].set_index("group")
        for col in ("ci_low", "ci_high", "std"):
            out[f"{prefix}_{col}"] = out["config_id"].map(m[col]) if not m.empty else None
    return out


def _methodology(runs: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for col in METHODOLOGY_FIELDS:
        if col not in runs:
            rows.append({"field": col, "values": None, "n_runs_with_value": 0})
            continue
        s = runs[col].dropna()
        s = s[s.astype(str) != ""]
        values = sorted({str(v) for v in s.unique()})  # distinct first: one str() per value
        rows.append(
            {
                "field": col,
                "values": "; ".join(values) if values else None,
                "n_runs_with_value": len(s),
            }
        )
    return pd.DataFrame(rows)


def _cost(runs: pd.DataFrame, agents: pd.DataFrame, settings: Mapping[str, Any]) -> pd.DataFrame:
    cost = settings["cost"]
    price = float(cost["price_per_hour_usd"])
    per_month = int(cost["executions_per_month"])
    tokens = (
        agents.assign(tok=pd.to_numeric(agents.get("concurrent_eval_count"), errors="coerce"))
        .groupby(["config_id", "run_index"])["tok"]
        .sum(min_count=1)
        if not agents.empty and "concurrent_eval_count" in agents
        else pd.Series(dtype=float)
    )
    runs = runs.copy()
    by_run = tokens.to_dict()  # a dict, not one MultiIndex lookup per run
    runs["tokens"] = [
        by_run.get((c, r), np.nan)
        for c, r in zip(runs["config_id"], runs["run_index"], strict=True)
    ]

    def one(scope: str, g: pd.DataFrame) -> dict[str, Any]:
        wall = g["concurrent_wall_s"].mean()
        row: dict[str, Any] = {"scope": scope, "scenario": None, "n_runs": len(g)}
        row["scenario"] = g["scenario"].iloc[0] if scope != "all" else None
        row.update(_cost_numbers("concurrent", wall, price, per_month))
        row.update(_cost_numbers("sequential", g["solo_sum_s"].mean(), price, per_month))
        row.update(
            _cost_numbers(
                "seed_sequential",
                g["concurrent_sum_s"].mean() if "concurrent_sum_s" in g else None,
                price,
                per_month,
            )
        )
        tok = g["tokens"].mean()
        row["tokens_per_execution"] = None if pd.isna(tok) else float(tok)
        tps = None if pd.isna(tok) or not wall else float(tok) / wall
        row["tokens_per_s"] = tps
        row["cost_per_1m_tokens_usd"] = None if not tps else price / (tps * 3600) * 1e6
        for kind in ("sequential", "seed_sequential"):
            a, b = row["concurrent_monthly_cost_usd"], row[f"{kind}_monthly_cost_usd"]
            ma, mb = (
                row["concurrent_cost_per_1k_marginal_usd"],
                row[f"{kind}_cost_per_1k_marginal_usd"],
            )
            row[f"{kind}_saving_pct"] = None if a is None or not b else 100 * (1 - a / b)
            row[f"{kind}_marginal_saving_pct"] = (
                None if ma is None or not mb else 100 * (1 - ma / mb)
            )
        return row

    rows = [one("all", runs)]
    rows += [one(str(cid), g) for cid, g in runs.groupby("config_id", sort=True)]
    out = pd.DataFrame(rows)
    out["price_per_hour_usd"] = price
    out["executions_per_month"] = per_month
    out["hours_per_month"] = HOURS_PER_MONTH
    out["instance"] = str(cost["instance"])
    return out


def _cost_numbers(prefix: str, wall_s: Any, price: float, per_month: int) -> dict[str, Any]:
    keys = [
        "wall_s",
        "executions_per_hour",
        "instances",
        "monthly_cost_usd",
        "cost_per_1k_usd",
        "cost_per_1k_marginal_usd",
        "utilisation_pct",
    ]
    if wall_s is None or pd.isna(wall_s) or wall_s <= 0:
        return {f"{prefix}_{k}": None for k in keys}
    per_hour = 3600.0 / float(wall_s)
    capacity = per_hour * HOURS_PER_MONTH
    instances = math.ceil(per_month / capacity)
    monthly = instances * price * HOURS_PER_MONTH
    return {
        f"{prefix}_wall_s": float(wall_s),
        f"{prefix}_executions_per_hour": per_hour,
        f"{prefix}_instances": instances,
        f"{prefix}_monthly_cost_usd": monthly,
        f"{prefix}_cost_per_1k_usd": monthly / per_month * 1000,
        f"{prefix}_cost_per_1k_marginal_usd": price / per_hour * 1000,
        f"{prefix}_utilisation_pct": 100 * per_month / (instances * capacity),
    }


@dataclass(frozen=True)
class _ConcurrentTtft:
    """Concurrent-phase TTFTs (ms), overall and per config, grouped once for every SLO scope
    (a mask over the whole calls table per config cost O(configs x calls))."""

    calls_all: np.ndarray  # per call, client TTFT
    calls_by_config: dict[str, np.ndarray]
    agents_all: np.ndarray  # per agent and run, mean TTFT (when no per-call data)
    agents_by_config: dict[str, np.ndarray]

    @classmethod
    def of(cls, calls: pd.DataFrame, agents: pd.DataFrame) -> _ConcurrentTtft:
        def grouped(df: pd.DataFrame, col: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
            df = df[df[col].notna()]
            by = {str(k): g.to_numpy(float) for k, g in df.groupby("config_id")[col]}
            return df[col].to_numpy(float), by

        empty: tuple[np.ndarray, dict[str, np.ndarray]] = (np.empty(0), {})
        c = (
            grouped(calls.loc[calls["phase"] == "concurrent"], "client_ttft_ms")
            if not calls.empty
            else empty
        )
        a = grouped(agents, "concurrent_ttft_ms") if not agents.empty else empty
        return cls(c[0], c[1], a[0], a[1])

    def p95(self, cid: str | None) -> tuple[float | None, str]:
        """P95 of the config's (``None``: all) per-call TTFTs, else of its per-agent means."""
        v = self.calls_all if cid is None else self.calls_by_config.get(cid, np.empty(0))
        if len(v):
            return float(np.percentile(v, 95)), "P95 of per-call client TTFT, concurrent phase"
        v = self.agents_all if cid is None else self.agents_by_config.get(cid, np.empty(0))
        if len(v):
            return (
                float(np.percentile(v, 95)),
                "P95 of per-agent mean TTFT, concurrent phase (no per-call data)",
            )
        return None, "TTFT not measured"


def _slo(
    runs: pd.DataFrame, agents: pd.DataFrame, calls: pd.DataFrame, settings: Mapping[str, Any]
) -> pd.DataFrame:
    slo = settings["slo"]
    legacy = settings["contention"]["legacy_speedup"]
    rows = []
    scopes: list[tuple[str, pd.DataFrame]] = [("all", runs)]
    scopes += [(str(c), g) for c, g in runs.groupby("config_id", sort=True)]
    ttft = _ConcurrentTtft.of(calls, agents)
    for scope, g in scopes:
        true = g["true_efficiency"].dropna()
        target = float(slo["min_true_efficiency_pct"])
        if len(true):
            obs = float(true.mean())
            rows.append(
                {
                    "scope": scope,
                    "check": "efficiency",
                    "target": target,
                    "comparison": "at least",
                    "observed": obs,
                    "basis": "mean true efficiency (%)",
                    "passed": obs >= target,
                }
            )
        else:
            rows.append(
                {
                    "scope": scope,
                    "check": "efficiency",
                    "target": target,
                    "comparison": "at least",
                    "observed": None,
                    "basis": "true efficiency not measured (no solo phase)",
                    "passed": None,
                }
            )
        p95, basis = ttft.p95(None if scope == "all" else scope)
        target = float(slo["max_p95_ttft_ms"])
        rows.append(
            {
                "scope": scope,
                "check": "p95_ttft",
                "target": target,
                "comparison": "at most",
                "observed": p95,
                "basis": basis,
                "passed": None if p95 is None else p95 <= target,
            }
        )
        measured = g[["contention_ttft", "contention_throughput"]]
        has = measured.notna().any(axis=1)
        target = float(slo["max_contention_rate_pct"])
        if has.any():
            flagged = measured[has].fillna(False).any(axis=1)
            obs, basis = (
                100 * float(flagged.mean()),
                "runs flagged by the TTFT or throughput rule (%)",
            )
        elif g["contention_legacy"].notna().any():
            obs = 100 * float(g["contention_legacy"].dropna().astype(bool).mean())
            basis = f"legacy rule only (seed speedup below {legacy:g}): no solo phase (%)"
        else:
            obs, basis = None, "contention not measured"
        rows.append(
            {
                "scope": scope,
                "check": "contention_rate",
                "target": target,
                "comparison": "at most",
                "observed": obs,
                "basis": basis,
                "passed": None if obs is None else obs <= target,
            }
        )
    return pd.DataFrame(rows)


def _recommendations(
    runs: pd.DataFrame, summary: pd.DataFrame, slo: pd.DataFrame, metric: str
) -> pd.DataFrame:
    rows = []
    cfg = summary[
        (summary["level"] == "config") & (summary["metric"] == metric) & (summary["n"] > 0)
    ]
    measured = runs[["contention_ttft", "contention_throughput"]].notna().any(axis=1)
    rule_col = "contention_ttft_or_throughput" if measured.any() else "contention_legacy"
    if rule_col == "contention_ttft_or_throughput":
        flags = runs[["contention_ttft", "contention_throughput"]].fillna(False).any(axis=1)
        flags = flags.where(measured)
    else:
        flags = runs["contention_legacy"]
    fl = runs.assign(_flag=flags).groupby("config_id")["_flag"]
    k_by = fl.apply(lambda s: int(s.dropna().astype(bool).sum()))
    n_by = fl.apply(lambda s: int(s.notna().sum()))
    for scen, g in cfg.groupby("scenario", sort=True):
        g = g.sort_values(["mean", "group"], ascending=[False, True])
        best = g.iloc[0]
        runner = g.iloc[1] if len(g) > 1 else None
        sep = None
        if runner is not None and pd.notna(best["ci_low"]) and pd.notna(runner["ci_high"]):
            sep = bool(best["ci_low"] > runner["ci_high"])
        rows.append(
            {
                "kind": "best",
                "scenario": scen,
                "config_id": best["group"],
                "metric": metric,
                "n": best["n"],
                "mean": best["mean"],
                "ci_low": best["ci_low"],
                "ci_high": best["ci_high"],
                "runner_up": None if runner is None else runner["group"],
                "runner_up_mean": None if runner is None else runner["mean"],
                "runner_up_ci_low": None if runner is None else runner["ci_low"],
                "runner_up_ci_high": None if runner is None else runner["ci_high"],
                "separable": sep,
                "contention_rule": rule_col.removeprefix("contention_"),
                "contention_flagged": k_by.get(best["group"]),
                "contention_n": n_by.get(best["group"]),
                "reasons": None,
            }
        )
    overall = runs[metric].mean()
    failing = slo[(slo["scope"] != "all") & (slo["passed"] == False)]  # noqa: E712
    for _, r in cfg.sort_values(["mean", "group"]).iterrows():
        reasons = []
        if pd.notna(r["ci_high"]) and r["ci_high"] < overall:
            reasons.append("CI of the mean lies below the study mean")
        fails = sorted(failing.loc[failing["scope"] == r["group"], "check"])
        reasons += [f"fails SLO {c}" for c in fails]
        if not reasons:
            continue
        rows.append(
            {
                "kind": "avoid",
                "scenario": r["scenario"],
                "config_id": r["group"],
                "metric": metric,
                "n": r["n"],
                "mean": r["mean"],
                "ci_low": r["ci_low"],
                "ci_high": r["ci_high"],
                "study_mean": overall,
                "contention_rule": rule_col.removeprefix("contention_"),
                "contention_flagged": k_by.get(r["group"]),
                "contention_n": n_by.get(r["group"]),
                "reasons": "; ".join(reasons),
            }
        )
    return pd.DataFrame(rows)


def _sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


# ---------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------


def reliability(runs: pd.DataFrame, failures: pd.DataFrame | None) -> pd.DataFrame:
    """Attempts, failures and retries: one ``overall`` row, then one row per failure cause.

    A run recorded at attempt k had k - 1 failed attempts before it (Snakemake retries);
    ``failures`` holds every failed attempt's report, including those of runs never recorded.
    """
    failures = (
        failures if failures is not None else pd.DataFrame(columns=["cause", "phase", "config_id"])
    )
    attempts = pd.to_numeric(runs.get("attempt"), errors="coerce") if "attempt" in runs else None
    retried = int((attempts > 1).sum()) if attempts is not None else 0
    n_fail = len(failures)
    rows = [
        {
            "level": "overall",
            "cause": "all",
            "runs_recorded": len(runs),
            "attempts": len(runs) + n_fail,
            "failures": n_fail,
            "retried_runs": retried,
            "phases": None,
            "configs": None,
            "share_pct": 100.0 * n_fail / (len(runs) + n_fail) if len(runs) + n_fail else None,
        }
    ]
    for cause, g in failures.groupby(failures["cause"].fillna("unknown"), sort=True):
        rows.append(
            {
                "level": "cause",
                "cause": str(cause),
                "runs_recorded": None,
                "attempts": None,
                "failures": len(g),
                "retried_runs": None,
                "phases": ", ".join(sorted({str(p) for p in g["phase"].dropna()})) or None,
                "configs": ", ".join(sorted({str(c) for c in g["config_id"].dropna()})) or None,
                "share_pct": 100.0 * len(g) / n_fail,
            }
        )
    return pd.DataFrame(rows)


def compute_statistics(
    runs: pd.DataFrame,
    agents: pd.DataFrame,
    calls: pd.DataFrame,
    settings: Mapping[str, Any] | None = None,
    sources: Mapping[str, str | Path] | None = None,
    failures: pd.DataFrame | None = None,
) -> Statistics:
    """Every statistic of the report from the three tables.

    ``sources`` (table name -> Parquet path) is recorded for the report's provenance section.
    Handles small n (CIs null below n = 2), all-null columns (e.g. TR110's true efficiency),
    one scenario and one config.
    """
    settings = resolve_settings(settings)
    boot = {
        "resamples": int(settings["bootstrap"]["resamples"]),
        "seed": int(settings["bootstrap"]["seed"]),
        "normal_from_n": int(settings["bootstrap"]["normal_from_n"]),
    }
    if runs.empty:
        raise ValueError("the runs table is empty: nothing to analyse")
    runs, agents, calls = prepare(runs, agents, calls)
    cfg_scen = runs.drop_duplicates("config_id").set_index("config_id")["scenario"].to_dict()
    metric = primary_metric(runs)
    ranked = [metric] if metric == "seed_efficiency" else [metric, "seed_efficiency"]

    run_summary = _summarise(runs, RUN_METRICS, cfg_scen, boot)
    agent_summary = _summarise(
        agents, AGENT_METRICS, cfg_scen, boot, extra=("agent",), keep_empty_overall=False
    )
    call_summary = _summarise(
        calls,
        CALL_METRICS,
        cfg_scen,
        boot,
        extra=("phase",),
        with_topology=False,
        keep_empty_overall=False,
    )
    slo = _slo(runs, agents, calls, settings)

    sources_rows = []
    for name, df in (("runs", runs), ("agents", agents), ("calls", calls)):
        path = Path(sources[name]) if sources and name in sources else None
        sources_rows.append(
            {
                "table": name,
                "path": None if path is None else str(path),
                "rows": len(df),
                "sha256": None if path is None else _sha256(path),
            }
        )

    sources_of_data = sorted(runs["source"].dropna().unique()) if "source" in runs else []
    reference: dict[str, pd.DataFrame] = {}
    tr110: dict[str, pd.DataFrame] = {}
    tr110_runs = None
    if "tr110" in sources_of_data:
        from mabench.datasets import tr110 as tr110_mod

        tr110_runs = runs[runs["source"] == "tr110"]
        tr110 = tr110_mod.reanalyse(tr110_runs, settings.get("tr110_dir"))
    if settings["reference"]:
        from mabench.datasets.reference import reference_tables

        if tr110_runs is None and "tr114" in settings["reference"]:
            from mabench.datasets import tr110 as tr110_mod

            tr110_runs = tr110_mod.frames()["runs"]
        reference = reference_tables(runs, settings["reference"], tr110_runs)

    has_solo = bool(runs["true_efficiency"].notna().any())
    meta = {
        "study": settings["study"],
        "title": settings["title"],
        "description": settings.get("description") or "",
        "sources": sources_of_data,
        "primary_metric": metric,
        "has_solo": has_solo,
        "has_calls": not calls.empty,
        "has_ttft_split": bool(
            (not calls.empty and calls[["load_ms", "prompt_eval_ms"]].notna().all(axis=1).any())
            or agents[["concurrent_load_ms", "concurrent_prompt_eval_ms"]].notna().all(axis=1).any()
        ),
        "n_runs": len(runs),
        "n_configs": int(runs["config_id"].nunique()),
        "n_scenarios": int(runs["scenario"].nunique()),
        "scenarios": sorted(runs["scenario"].dropna().unique().tolist()),
        "configs": sorted(runs["config_id"].unique().tolist()),
        "agents": sorted(agents["agent"].dropna().unique().tolist()) if not agents.empty else [],
        "topologies": sorted(runs["topology"].dropna().unique().tolist())
        if "topology" in runs
        else [],
        "runs_per_config_min": int(runs.groupby("config_id").size().min()),
        "runs_per_config_max": int(runs.groupby("config_id").size().max()),
        "n_agent_rows": len(agents),
        "n_call_rows": len(calls),
        "settings": settings,
        "mabench_version": __version__,
        "bootstrap": boot,
        "wilcoxon_min_n": WILCOXON_MIN_N,
        "hours_per_month": HOURS_PER_MONTH,
    }
    return Statistics(
        meta=meta,
        run_summary=run_summary,
        agent_summary=agent_summary,
        call_summary=call_summary,
        ttft_split=_ttft_split(calls, agents, cfg_scen),
        contention=_contention(runs),
        top_configs=_ranked_configs(run_summary, ranked, top=True),
        bottom_configs=_ranked_configs(run_summary, ranked, top=False),
        top_runs=_ranked_runs(runs, ranked, top=True),
        bottom_runs=_ranked_runs(runs, ranked, top=False),
        outliers=_outliers(runs, ranked),
        consistency=_consistency(run_summary),
        comparisons=_comparisons(runs),
        paired=_paired(agents, boot),
        recommendations=_recommendations(runs, run_summary, slo, metric),
        cost=_cost(runs, agents, settings),
        slo=slo,
        slo_configs=_slo_configs(slo),
        seed_vs_true=_seed_vs_true(runs, boot),
        limitations=_limitations(runs, agents, calls, run_summary, metric),
        per_config=_per_config(runs, agents, run_summary),
        methodology=_methodology(runs),
        inputs=pd.DataFrame(sources_rows),
        reliability=reliability(runs, failures),
        reference=reference,
        tr110=tr110,
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is pd.NA:
        return None
    return value


def _to_arrow(df: pd.DataFrame) -> pa.Table:
    df = df.reset_index(drop=True)
    clean = df.copy()
    for col in clean.columns:
        if str(clean[col].dtype) == "boolean":
            clean[col] = clean[col].astype(object).where(clean[col].notna(), None)
    return pa.Table.from_pandas(clean, preserve_index=False)


def headline(stats: Statistics) -> dict[str, Any]:
    """The numbers the executive summary leads with (also in summary.json)."""
    rs = stats.run_summary
    out: dict[str, Any] = {}
    for metric in ("seed_efficiency", "true_efficiency", "seed_speedup", "true_speedup"):
        row = rs[(rs["level"] == "overall") & (rs["metric"] == metric)]
        if not row.empty and row.iloc[0]["n"]:
            r = row.iloc[0]
            out[metric] = {k: r[k] for k in ("n", "mean", "median", "ci_low", "ci_high")}
    cont = stats.contention[stats.contention["level"] == "overall"]
    out["contention"] = {
        r["rule"]: {"n": r["n"], "flagged": r["flagged"], "rate_pct": r["rate_pct"]}
        for _, r in cont.iterrows()
    }
    top = stats.top_configs[stats.top_configs["metric"] == stats.meta["primary_metric"]]
    if not top.empty:
        out["best_config"] = {k: top.iloc[0][k] for k in ("config_id", "scenario", "mean", "n")}
    return _jsonable(out)


def write_statistics(stats: Statistics, out_dir: str | Path) -> dict[str, Path]:
    """Write every table as ``<name>.parquet`` and ``summary.json`` (meta, headline, files)."""
    from mabench.measure.records import write_json_atomic

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for name, df in stats.frames().items():
        path = out / f"{name}.parquet"
        tmp = path.with_name(f".{path.name}.tmp")
        pq.write_table(_to_arrow(df), tmp)
        tmp.replace(path)
        paths[name] = path
    summary = {
        "meta": stats.meta,
        "headline": headline(stats),
        "files": {
            name: {"file": p.name, "rows": len(stats.frames()[name])} for name, p in paths.items()
        },
    }
    paths["summary"] = out / "summary.json"
    write_json_atomic(paths["summary"], _jsonable(summary))
    return paths


def load_statistics(stats_dir: str | Path) -> Statistics:
    """Read what :func:`write_statistics` wrote."""
    d = Path(stats_dir)
    summary = json.loads((d / "summary.json").read_text())
    frames = {name: pd.read_parquet(d / info["file"]) for name, info in summary["files"].items()}
    plain = {f.name for f in fields(Statistics)} - {"meta", "reference", "tr110"}
    return Statistics(
        meta=summary["meta"],
        **{name: frames.get(name, pd.DataFrame()) for name in plain},
        reference={
            k[len("reference_") :]: v for k, v in frames.items() if k.startswith("reference_")
        },
        tr110={k[len("tr110_") :]: v for k, v in frames.items() if k.startswith("tr110_")},
    )


def read_tables(tables: str | Path | Mapping[str, str | Path]) -> dict[str, pd.DataFrame]:
    """Read runs/agents/calls Parquet (a folder holding them, or name -> path), schema-checked."""
    from mabench.analysis.tables import read_table

    if isinstance(tables, Mapping):
        paths = {k: Path(v) for k, v in tables.items()}
    else:
        paths = {k: Path(tables) / f"{k}.parquet" for k in ("runs", "agents", "calls")}
    out = {k: read_table(paths[k], k).to_pandas() for k in ("runs", "agents", "calls")}
    failures = paths.get("failures", next(iter(paths.values())).parent / "failures.parquet")
    if failures.is_file():
        out["failures"] = read_table(failures, "failures").to_pandas()
    return out


def run(
    tables: str | Path | Mapping[str, str | Path],
    out_dir: str | Path,
    settings: Mapping[str, Any] | Any | None = None,
) -> dict[str, Path]:
    """Tables in, statistics files out: what the pipeline's statistics rule calls."""
    if isinstance(tables, Mapping):
        paths = {k: Path(v) for k, v in tables.items()}
    else:
        paths = {k: Path(tables) / f"{k}.parquet" for k in ("runs", "agents", "calls")}
    t = read_tables(paths)
    stats = compute_statistics(
        t["runs"],
        t["agents"],
        t["calls"],
        resolve_settings(settings),
        sources={k: v for k, v in paths.items() if k in ("runs", "agents", "calls")},
        failures=t.get("failures"),
    )
    return write_statistics(stats, out_dir)


__all__ = [
    "AGENT_METRICS",
    "CALL_METRICS",
    "DEFAULT_SETTINGS",
    "RUN_METRICS",
    "Statistics",
    "bootstrap_ci",
    "cliffs_delta",
    "cliffs_magnitude",
    "compare_two",
    "compute_statistics",
    "describe",
    "headline",
    "holm",
    "iqr_fences",
    "load_statistics",
    "primary_metric",
    "read_tables",
    "resolve_settings",
    "run",
    "wilson_ci",
    "write_statistics",
]
