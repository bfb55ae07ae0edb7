"""Summaries: the grouped descriptive tables of a study.

Per level (overall, scenario, config, topology) and metric: descriptive statistics with the
intervals of a mean (:func:`mean_intervals`: conditional on the configs studied, and with the
configs as a sample); contention rates with Wilson CIs; rankings of configs and runs; IQR
outliers; within-config consistency; the TTFT split; seed vs true efficiency; the per-config
table; values dropped as not finite; reliability (attempts and failures); the configs whose
servers had no forced unload.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from mabench.analysis.stats.estimators import (
    conditional_interval,
    describe,
    finite_values,
    group_means_interval,
    iqr_fences,
    rate_t_coverage,
    spearman_bootstrap,
    t_interval,
    wilson_ci,
)

TOP_N = 5

#: run-level metrics summarised per config / scenario / overall (and topology), with units
RUN_METRICS: dict[str, str] = {
    "seed_efficiency": "%",
    "true_efficiency": "%",
    "seed_speedup": "x",
    "true_speedup": "x",
    "interference_efficiency": "%",
    "interference_speedup": "x",
    "true_efficiency_excl_load": "%",
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

COMPARED_METRICS = ("seed_efficiency", "true_efficiency")


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
    """true_efficiency where a baseline was measured (one after another, each agent with the
    whole machine), else interference_efficiency where a solo phase was, else the seed
    formula."""
    for metric in ("true_efficiency", "interference_efficiency"):
        if metric in runs and runs[metric].notna().any():
            return metric
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


def _unit_codes(df: pd.DataFrame, by_run: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Each row's config code and, when several rows belong to one run, its run code."""
    cfg = pd.factorize(df["config_id"], sort=False)[0]
    if not by_run:
        return cfg, None
    run = pd.MultiIndex.from_arrays([df["config_id"], df["run_index"]])
    return cfg, pd.factorize(run, sort=False)[0]


def mean_intervals(
    values: np.ndarray, configs: np.ndarray, runs: np.ndarray | None = None
) -> dict[str, Any]:
    """The two intervals of a mean over several configs (``values`` finite, ``configs`` and
    ``runs`` their codes): conditional on the configs studied (``ci_low``, ``ci_high``) and
    with the configs as a sample (``config_ci_low``, ``config_ci_high``, over ``n_configs``
    config means, whose mean is ``config_mean``). With ``runs``, each run's mean is the unit
    within its config (several calls of one run are not independent)."""
    if runs is not None and len(values):
        run_codes, first = np.unique(runs, return_index=True)
        pos = np.searchsorted(run_codes, runs)
        values = np.bincount(pos, weights=values) / np.bincount(pos)
        configs = configs[first]
    cond = conditional_interval(values, configs)
    conf = group_means_interval(values, configs)
    return {
        "ci_low": cond["low"],
        "ci_high": cond["high"],
        "n_configs": conf["n_groups"],
        "config_mean": conf["mean"],
        "config_ci_low": conf["low"],
        "config_ci_high": conf["high"],
    }


def summarise(
    df: pd.DataFrame,
    metrics: Mapping[str, str],
    config_scenario: Mapping[str, str],
    extra: tuple[str, ...] = (),
    with_topology: bool = True,
    keep_empty_overall: bool = True,
    by_run: bool = False,
) -> pd.DataFrame:
    """Descriptive statistics (:func:`describe`) of each metric per level and ``extra`` key,
    with the CIs of :func:`mean_intervals` (``by_run``: rows are calls, a run is the unit)."""
    rows: list[dict[str, Any]] = []
    if df.empty:
        return pd.DataFrame(columns=["level", "group", "scenario", *extra, "metric", "unit", "n"])
    columns = {
        m: df[m].to_numpy(dtype=float, na_value=np.nan) for m in metrics if m in df
    }  # each metric as one float array, sliced per group
    cfg_codes, run_codes = _unit_codes(df, by_run)
    for level, key in _levels(df, with_topology):
        for keys, positions in _group_rows(df, ([key] if key else []) + list(extra)):
            gname, ev = (keys[0], keys[1:]) if key else ("all", keys)
            scen = (
                gname
                if level == "scenario"
                else config_scenario.get(gname)
                if level == "config"
                else None
            )
            for metric, unit in metrics.items():
                if metric not in columns:
                    continue
                vals = columns[metric][positions]
                if np.isnan(vals).all() and not (level == "overall" and keep_empty_overall):
                    continue
                ok = np.isfinite(vals)
                d = describe(vals)
                if ok.any():
                    runs = None if run_codes is None else run_codes[positions][ok]
                    d.update(mean_intervals(vals[ok], cfg_codes[positions][ok], runs))
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


def contention(runs: pd.DataFrame) -> pd.DataFrame:
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
                        **_config_rates(g.loc[s.index, "config_id"], s),
                    }
                )
    return pd.DataFrame(rows)


def _config_rates(configs: pd.Series, flags: pd.Series) -> dict[str, Any]:
    """The configs as the unit of a contention rate: the mean of the configs' rates (%), the
    t-interval of those rates clipped to [0, 100] and its coverage simulated at this study's
    configs and runs per config (:func:`rate_t_coverage`, at the pooled rate kept within
    [5, 95] %)."""
    rates = flags.astype(float).groupby(configs.to_numpy()).mean() * 100
    out: dict[str, Any] = {"n_configs": len(rates), "config_rate_pct": None}
    out.update(config_ci_low_pct=None, config_ci_high_pct=None, config_ci_coverage_pct=None)
    if not len(rates):
        return out
    out["config_rate_pct"] = float(rates.mean())
    lo, hi = t_interval(rates)
    if lo is None or hi is None:
        return out
    out.update(config_ci_low_pct=max(0.0, lo), config_ci_high_pct=min(100.0, hi))
    per_config = round(len(flags) / len(rates))
    pooled = min(0.95, max(0.05, round(float(flags.mean()) * 20) / 20))
    out["config_ci_coverage_pct"] = rate_t_coverage(len(rates), per_config, pooled)
    return out


def ranked_configs(summary: pd.DataFrame, metrics: Iterable[str], top: bool) -> pd.DataFrame:
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


def ranked_runs(runs: pd.DataFrame, metrics: Iterable[str], top: bool) -> pd.DataFrame:
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


def outliers(runs: pd.DataFrame, metrics: Iterable[str]) -> pd.DataFrame:
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


def consistency(summary: pd.DataFrame) -> pd.DataFrame:
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


def _ttft_parts(
    calls: pd.DataFrame, agents: pd.DataFrame
) -> tuple[str, list[tuple[str, pd.DataFrame]]]:
    """The basis of the split and, per phase, a frame of ttft, load and prefill (ms): per call
    when there are per-call records, else per agent and run (its mean)."""
    if not calls.empty:
        frame = calls[["config_id", "scenario", "phase"]].assign(
            ttft=calls["client_ttft_ms"], load=calls["load_ms"], prefill=calls["prompt_eval_ms"]
        )
        return "calls", [
            ("solo", frame[frame["phase"] == "solo"]),
            ("concurrent", frame[frame["phase"] == "concurrent"]),
        ]
    return "agents (mean per agent and run)", [
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


def _ttft_split_row(level: str, gname: Any, g: pd.DataFrame, **key: Any) -> dict[str, Any]:
    split = g[["load", "prefill"]].notna().all(axis=1)
    gs = g[split]
    return {
        "level": level,
        "group": str(gname),
        **key,
        "n": len(g),
        "ttft_ms": g["ttft"].mean(),
        "n_split": len(gs),
        "load_ms": gs["load"].mean() if len(gs) else None,
        "prefill_ms": gs["prefill"].mean() if len(gs) else None,
        "rest_ms": (gs["ttft"] - gs["load"] - gs["prefill"]).mean() if len(gs) else None,
    }


def ttft_split(
    calls: pd.DataFrame, agents: pd.DataFrame, cfg_scen: Mapping[str, str]
) -> pd.DataFrame:
    """Mean client TTFT and its server-side split (load, prefill, rest) per level and phase."""
    if calls.empty and agents.empty:
        return pd.DataFrame()
    basis, parts = _ttft_parts(calls, agents)
    rows = []
    for phase, f in parts:
        f = f[f["ttft"].notna()]
        if f.empty:
            continue
        for level, key in (("overall", None), ("scenario", "scenario"), ("config", "config_id")):
            groups = [("all", f)] if key is None else list(f.groupby(key, sort=True))
            for gname, g in groups:
                scen = gname if level == "scenario" else cfg_scen.get(gname)
                rows.append(
                    _ttft_split_row(level, gname, g, scenario=scen, phase=phase, basis=basis)
                )
    return pd.DataFrame(rows)


def seed_vs_true(runs: pd.DataFrame) -> pd.DataFrame:
    """How far the seed formula is from true efficiency, run by run (both measured): the mean
    difference with its interval conditional on the configs and with the configs as a sample;
    whether they rank the configs alike: Spearman's rho of the config means with its bootstrap
    interval over configs."""
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
        configs = g["config_id"].to_numpy()
        cfg = g.groupby("config_id")[["seed_efficiency", "true_efficiency"]].mean()
        rank = spearman_bootstrap(cfg["seed_efficiency"], cfg["true_efficiency"])
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
                **mean_intervals(diff, configs),
                "runs_seed_above_true": int((diff > 0).sum()),
                "config_rank_spearman": rank["rho"],
                "config_rank_spearman_low": rank["low"],
                "config_rank_spearman_high": rank["high"],
                "config_rank_resamples": rank["resamples"],
                "best_config_seed": best_seed,
                "best_config_true": best_true,
                "same_best_config": best_seed == best_true,
            }
        )
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


def _distinct(g: pd.DataFrame, col: str) -> str | None:
    """The distinct values of a text column, joined with "; " (None if it has none)."""
    if col not in g:
        return None
    return "; ".join(sorted(g[col].dropna().astype(str).unique())) or None


def _mean(g: pd.DataFrame, col: str) -> float | None:
    values = pd.to_numeric(g[col], errors="coerce") if col in g else pd.Series(dtype=float)
    return float(values.mean()) if values.notna().any() else None


def per_config(runs: pd.DataFrame, agents: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
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
                "api": ";".join(sorted(g["api"].dropna().astype(str).unique())) or None
                if "api" in g
                else None,
                "agent_options": options,
                "n_runs": len(g),
                "seed_efficiency": g["seed_efficiency"].mean(),
                "true_efficiency": g["true_efficiency"].mean(),
                "seed_speedup": g["seed_speedup"].mean(),
                "true_speedup": g["true_speedup"].mean(),
                "baseline": _distinct(g, "baseline"),
                "baseline_reason": _distinct(g, "baseline_reason"),
                "interference_efficiency": _mean(g, "interference_efficiency"),
                "interference_speedup": _mean(g, "interference_speedup"),
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


def dropped(tables: Mapping[str, tuple[pd.DataFrame, Mapping[str, str]]]) -> pd.DataFrame:
    """Per table and measured metric: rows, values used, and values left out because they are
    not finite numbers (null, NaN or ±inf in a row whose other metrics were measured)."""
    rows = []
    for name, (df, metrics) in tables.items():
        for metric in metrics:
            if metric not in df:
                continue
            used, left_out = finite_values(df[metric])
            if len(used):
                rows.append(
                    {
                        "table": name,
                        "metric": metric,
                        "rows": len(df),
                        "used": len(used),
                        "dropped": left_out,
                    }
                )
    return pd.DataFrame(rows)


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


def isolation_gaps(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per config whose runs had servers without a forced unload (servers that speak
    only the OpenAI API): which servers, in how many of its runs."""
    columns = ["config_id", "servers", "runs", "n_runs"]
    if "isolation_unavailable" not in runs or runs.empty:
        return pd.DataFrame(columns=columns)
    rows = []
    for cid, g in runs.groupby("config_id", sort=True):
        gaps = g["isolation_unavailable"].fillna("").astype(str)
        hit = gaps[gaps != ""]
        if len(hit):
            servers = sorted({s for value in hit for s in value.split(";")})
            rows.append(
                {
                    "config_id": cid,
                    "servers": ", ".join(servers),
                    "runs": len(hit),
                    "n_runs": len(g),
                }
            )
    return pd.DataFrame(rows, columns=columns)
