"""Advice: what the numbers mean for a user: recommendations, SLO checks, cost, limitations.

An SLO check's ``passed`` compares the point estimate with the target. Where the data allow a
test at the config level it also gives the one-sided 95 % bound on the side of a failure
(``bound``) and ``failure_shown``: the bound, too, misses the target. Efficiency: the one-sided
t bound of a config's runs (of the config means for the whole study); contention rate: the
one-sided Wilson bound of a config's flagged runs. The other verdicts are point estimates
(``test`` says which). Only a failure a test shows puts a config on the "avoid" list.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from mabench.analysis.stats.estimators import LEVEL, holm, welch, wilson_ci

HOURS_PER_MONTH = 730.0
POINT_ESTIMATE = "point estimate"
#: z of a one-sided 95 % bound
Z_ONE_SIDED = float(sps.norm.ppf(LEVEL))


def slo_configs(slo: pd.DataFrame) -> pd.DataFrame:
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
        shown = g.loc[g["failure_shown"] == True, "check"] if "failure_shown" in g else []  # noqa: E712
        row["failures_shown"] = ", ".join(shown)
        rows.append(row)
    return pd.DataFrame(rows)


def _sample_size_rows(runs: pd.DataFrame, summary: pd.DataFrame, metric: str) -> list[dict]:
    """Runs per config and how wide the configs' CIs of the mean are."""
    per_cfg = runs.groupby("config_id").size()
    cfg = summary[(summary["level"] == "config") & (summary["metric"] == metric)]
    width = (cfg["ci_high"] - cfg["ci_low"]).dropna()
    return [
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


def _measured(runs: pd.DataFrame, agents: pd.DataFrame, calls: pd.DataFrame) -> dict[str, bool]:
    """Whether the source measured each thing the report can show."""
    return {
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


def limitations(
    runs: pd.DataFrame,
    agents: pd.DataFrame,
    calls: pd.DataFrame,
    summary: pd.DataFrame,
    metric: str,
) -> pd.DataFrame:
    """What limits the conclusions: sample sizes, CI widths, and what was not measured."""
    rows = _sample_size_rows(runs, summary, metric)
    for what, measured in _measured(runs, agents, calls).items():
        if not measured:
            rows.append({"item": "not measured", "value": None, "detail": what})
    return pd.DataFrame(rows)


def _tokens_per_run(runs: pd.DataFrame, agents: pd.DataFrame) -> list[float]:
    """Tokens generated in each run's concurrent phase (all agents), in runs' row order."""
    tokens = (
        agents.assign(tok=pd.to_numeric(agents.get("concurrent_eval_count"), errors="coerce"))
        .groupby(["config_id", "run_index"])["tok"]
        .sum(min_count=1)
        if not agents.empty and "concurrent_eval_count" in agents
        else pd.Series(dtype=float)
    )
    by_run = tokens.to_dict()  # a dict, not one MultiIndex lookup per run
    return [
        by_run.get((c, r), np.nan)
        for c, r in zip(runs["config_id"], runs["run_index"], strict=True)
    ]


def _savings(row: dict[str, Any]) -> None:
    """Add each sequential alternative's saving against running at once (in place)."""
    for kind in ("sequential", "seed_sequential"):
        a, b = row["concurrent_monthly_cost_usd"], row[f"{kind}_monthly_cost_usd"]
        ma, mb = (
            row["concurrent_cost_per_1k_marginal_usd"],
            row[f"{kind}_cost_per_1k_marginal_usd"],
        )
        row[f"{kind}_saving_pct"] = None if a is None or not b else 100 * (1 - a / b)
        row[f"{kind}_marginal_saving_pct"] = None if ma is None or not mb else 100 * (1 - ma / mb)


def _cost_row(scope: str, g: pd.DataFrame, price: float, per_month: int) -> dict[str, Any]:
    """The cost model of one scope (``all`` or a config) from its runs."""
    wall = g["concurrent_wall_s"].mean()
    row: dict[str, Any] = {"scope": scope, "scenario": None, "n_runs": len(g)}
    row["scenario"] = g["scenario"].iloc[0] if scope != "all" else None
    row.update(_cost_numbers("concurrent", wall, price, per_month))
    row.update(_cost_numbers("sequential", g["solo_sum_s"].mean(), price, per_month))
    seed_wall = g["concurrent_sum_s"].mean() if "concurrent_sum_s" in g else None
    row.update(_cost_numbers("seed_sequential", seed_wall, price, per_month))
    tok = g["tokens"].mean()
    row["tokens_per_execution"] = None if pd.isna(tok) else float(tok)
    tps = None if pd.isna(tok) or not wall else float(tok) / wall
    row["tokens_per_s"] = tps
    row["cost_per_1m_tokens_usd"] = None if not tps else price / (tps * 3600) * 1e6
    _savings(row)
    return row


def cost(runs: pd.DataFrame, agents: pd.DataFrame, settings: Mapping[str, Any]) -> pd.DataFrame:
    """The cost model for the whole study and per config (formulas in the report)."""
    cost = settings["cost"]
    price = float(cost["price_per_hour_usd"])
    per_month = int(cost["executions_per_month"])
    runs = runs.assign(tokens=_tokens_per_run(runs, agents))
    rows = [_cost_row("all", runs, price, per_month)]
    rows += [
        _cost_row(str(cid), g, price, per_month) for cid, g in runs.groupby("config_id", sort=True)
    ]
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


def _check(scope: str, check: str, target: float, comparison: str, **kw: Any) -> dict[str, Any]:
    row = {"scope": scope, "check": check, "target": target, "comparison": comparison}
    return {**row, "test": POINT_ESTIMATE, "bound": None, "failure_shown": None, **kw}


def _t_upper_bound(values: np.ndarray) -> float | None:
    """One-sided 95 % upper t bound of the mean: mean + t(0.95, n - 1) s / sqrt(n)."""
    if len(values) < 2:
        return None
    sd = float(values.std(ddof=1))
    return float(values.mean()) + float(sps.t.ppf(LEVEL, len(values) - 1)) * sd / math.sqrt(
        len(values)
    )


def _efficiency_test(scope: str, g: pd.DataFrame, target: float) -> dict[str, Any]:
    """The one-sided t test of mean true efficiency at least ``target``: a config's runs, or
    the whole study's config means (the config is the unit)."""
    if scope == "all":
        values = g.groupby("config_id")["true_efficiency"].mean().dropna().to_numpy(float)
        test = "one-sided t, config means"
    else:
        values = g["true_efficiency"].dropna().to_numpy(float)
        test = "one-sided t, the config's runs"
    bound = _t_upper_bound(values)
    if bound is None:
        return {}
    return {"test": test, "bound": bound, "failure_shown": bound < target}


def _efficiency_check(scope: str, g: pd.DataFrame, target: float) -> dict[str, Any]:
    true = g["true_efficiency"].dropna()
    if not len(true):
        return _check(
            scope,
            "efficiency",
            target,
            "at least",
            observed=None,
            basis="true efficiency not measured (no solo phase)",
            passed=None,
        )
    obs = float(true.mean())
    return _check(
        scope,
        "efficiency",
        target,
        "at least",
        observed=obs,
        basis="mean true efficiency (%)",
        passed=obs >= target,
        **_efficiency_test(scope, g, target),
    )


def _ttft_check(scope: str, ttft: _ConcurrentTtft, target: float) -> dict[str, Any]:
    p95, basis = ttft.p95(None if scope == "all" else scope)
    return _check(
        scope,
        "p95_ttft",
        target,
        "at most",
        observed=p95,
        basis=basis,
        passed=None if p95 is None else p95 <= target,
    )


def _contention_check(scope: str, g: pd.DataFrame, target: float, legacy: float) -> dict:
    measured = g[["contention_ttft", "contention_throughput"]]
    has = measured.notna().any(axis=1)
    tested: dict[str, Any] = {}
    if has.any():
        flagged = measured[has].fillna(False).any(axis=1)
        obs, basis = (
            100 * float(flagged.mean()),
            "runs flagged by the TTFT or throughput rule (%)",
        )
        if scope != "all":  # a config's runs are its replicates; the study's are not
            low, _ = wilson_ci(int(flagged.sum()), len(flagged), Z_ONE_SIDED)
            bound = 100 * float(low or 0.0)
            tested = {
                "test": "one-sided Wilson, the config's runs",
                "bound": bound,
                "failure_shown": bound > target,
            }
    elif g["contention_legacy"].notna().any():
        obs = 100 * float(g["contention_legacy"].dropna().astype(bool).mean())
        basis = f"legacy rule only (seed speedup below {legacy:g}): no solo phase (%)"
    else:
        obs, basis = None, "contention not measured"
    return _check(
        scope,
        "contention_rate",
        target,
        "at most",
        observed=obs,
        basis=basis,
        passed=None if obs is None else obs <= target,
        **tested,
    )


def _attainment_check(scope: str, attainment: pd.DataFrame, target: float) -> dict[str, Any]:
    row = pd.DataFrame()
    if not attainment.empty:
        level, group = ("overall", "all") if scope == "all" else ("config", scope)
        row = attainment[
            (attainment["level"] == level)
            & (attainment["group"] == group)
            & (attainment["phase"] == "concurrent")
        ]
    if row.empty:
        return _check(
            scope,
            "slo_attainment",
            target,
            "at least",
            observed=None,
            basis="per-call times not measured",
            passed=None,
        )
    r = row.iloc[0]
    obs = float(r["slo_attainment_pct"])
    basis = (
        f"calls of the concurrent phase with TTFT at most {r['ttft_target_ms']:g} ms and TPOT "
        f"at most {r['tpot_target_ms']:g} ms (%)"
    )
    return _check(
        scope, "slo_attainment", target, "at least", observed=obs, basis=basis, passed=obs >= target
    )


def slo(
    runs: pd.DataFrame,
    agents: pd.DataFrame,
    calls: pd.DataFrame,
    settings: Mapping[str, Any],
    attainment: pd.DataFrame,
) -> pd.DataFrame:
    """Each SLO of the settings checked for the whole study (scope ``all``) and per config."""
    targets = settings["slo"]
    legacy = settings["contention"]["legacy_speedup"]
    scopes: list[tuple[str, pd.DataFrame]] = [("all", runs)]
    scopes += [(str(c), g) for c, g in runs.groupby("config_id", sort=True)]
    ttft = _ConcurrentTtft.of(calls, agents)
    rows = []
    for scope, g in scopes:
        rows.append(_efficiency_check(scope, g, float(targets["min_true_efficiency_pct"])))
        rows.append(_ttft_check(scope, ttft, float(targets["max_p95_ttft_ms"])))
        rows.append(_contention_check(scope, g, float(targets["max_contention_rate_pct"]), legacy))
        rows.append(_attainment_check(scope, attainment, float(targets["min_goodput_pct"])))
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class _ContentionCounts:
    """Runs flagged by the study's most informative contention rule, per config."""

    rule: str  # ttft_or_throughput when a solo baseline exists, else legacy
    flagged: Mapping[str, int]
    runs: Mapping[str, int]

    @classmethod
    def of(cls, runs: pd.DataFrame) -> _ContentionCounts:
        measured = runs[["contention_ttft", "contention_throughput"]].notna().any(axis=1)
        if measured.any():
            rule = "ttft_or_throughput"
            flags = runs[["contention_ttft", "contention_throughput"]].fillna(False).any(axis=1)
            flags = flags.where(measured)
        else:
            rule, flags = "legacy", runs["contention_legacy"]
        fl = runs.assign(_flag=flags).groupby("config_id")["_flag"]
        k_by = fl.apply(lambda s: int(s.dropna().astype(bool).sum()))
        n_by = fl.apply(lambda s: int(s.notna().sum()))
        return cls(rule, k_by.to_dict(), n_by.to_dict())

    def columns(self, config_id: str) -> dict[str, Any]:
        return {
            "contention_rule": self.rule,
            "contention_flagged": self.flagged.get(config_id),
            "contention_n": self.runs.get(config_id),
        }


def _config_row(r: pd.Series) -> dict[str, Any]:
    return {
        "scenario": r["scenario"],
        "config_id": r["group"],
        "n": r["n"],
        "mean": r["mean"],
        "ci_low": r["ci_low"],
        "ci_high": r["ci_high"],
    }


def _best_rows(
    cfg: pd.DataFrame, values: Mapping[str, np.ndarray], metric: str, counts: _ContentionCounts
) -> list[dict]:
    """Per scenario, the config with the highest mean against its runner-up: Welch's interval
    and test of the difference of their runs' means (a maximum of several means is biased
    upward, so the choice is supported only when the difference is)."""
    rows = []
    for _, g in cfg.groupby("scenario", sort=True):
        g = g.sort_values(["mean", "group"], ascending=[False, True])
        best, runner = g.iloc[0], (g.iloc[1] if len(g) > 1 else None)
        w = welch(values[best["group"]], values[runner["group"]]) if runner is not None else {}
        low = w.get("diff_low")
        rows.append(
            {
                "kind": "best",
                **_config_row(best),
                "metric": metric,
                "n_candidates": len(g),
                "runner_up": None if runner is None else runner["group"],
                "runner_up_mean": None if runner is None else runner["mean"],
                "runner_up_n": None if runner is None else runner["n"],
                "diff": w.get("diff"),
                "diff_ci_low": low,
                "diff_ci_high": w.get("diff_high"),
                "p": w.get("welch_p"),
                "supported": None if low is None else bool(low > 0),
                **counts.columns(best["group"]),
                "reasons": None,
            }
        )
    return rows


def _leave_one_out(cfg: pd.DataFrame, values: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """Each config's runs against the runs of every other config (Welch), Holm across configs."""
    rows = []
    for cid in cfg["group"]:
        others = [v for k, v in values.items() if k != cid]
        rest = np.concatenate(others) if others else np.empty(0)
        w = welch(values[cid], rest)
        rows.append({"config_id": cid, "others_mean": rest.mean() if len(rest) else None, **w})
    out = pd.DataFrame(rows)
    out["p_holm"] = holm(out["welch_p"]) if len(out) else []
    return out.set_index("config_id")


def _avoid_rows(
    cfg: pd.DataFrame,
    values: Mapping[str, np.ndarray],
    slo: pd.DataFrame,
    metric: str,
    counts: _ContentionCounts,
) -> list[dict]:
    """Configs significantly below the others (leave-one-out, Holm) or shown by a one-sided
    test to fail an SLO (a point estimate below a target alone never lists a config)."""
    rows = []
    loo = _leave_one_out(cfg, values)
    failing = slo[(slo["scope"] != "all") & (slo["failure_shown"] == True)]  # noqa: E712
    for _, r in cfg.sort_values(["mean", "group"]).iterrows():
        t = loo.loc[r["group"]]
        reasons = []
        if pd.notna(t["p_holm"]) and t["p_holm"] < 0.05 and t["diff"] < 0:
            reasons.append(
                "below the other configs (leave-one-out Welch t, Holm-adjusted p below 0.05)"
            )
        fails = sorted(failing.loc[failing["scope"] == r["group"], "check"])
        reasons += [f"fails SLO {c} (one-sided test, p below 0.05)" for c in fails]
        if not reasons:
            continue
        rows.append(
            {
                "kind": "avoid",
                **_config_row(r),
                "metric": metric,
                "others_mean": t["others_mean"],
                "diff": t["diff"],
                "diff_ci_low": t["diff_low"],
                "diff_ci_high": t["diff_high"],
                "p": t["welch_p"],
                "p_holm": t["p_holm"],
                **counts.columns(r["group"]),
                "reasons": "; ".join(reasons),
            }
        )
    return rows


def recommendations(
    runs: pd.DataFrame, summary: pd.DataFrame, slo: pd.DataFrame, metric: str
) -> pd.DataFrame:
    """The best config per scenario and the configs to avoid, on ``metric``, by tests of
    differences (never by overlapping intervals)."""
    cfg = summary[
        (summary["level"] == "config") & (summary["metric"] == metric) & (summary["n"] > 0)
    ]
    values = {str(cid): g.dropna().to_numpy(float) for cid, g in runs.groupby("config_id")[metric]}
    counts = _ContentionCounts.of(runs)
    rows = _best_rows(cfg, values, metric, counts)
    rows += _avoid_rows(cfg, values, slo, metric, counts)
    return pd.DataFrame(rows)
