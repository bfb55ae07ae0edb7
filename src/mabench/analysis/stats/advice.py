"""Advice: what the numbers mean for a user: recommendations, SLO checks, cost, limitations."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

HOURS_PER_MONTH = 730.0


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
        rows.append(row)
    return pd.DataFrame(rows)


def limitations(
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


def cost(runs: pd.DataFrame, agents: pd.DataFrame, settings: Mapping[str, Any]) -> pd.DataFrame:
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


def slo(
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


def recommendations(
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
