"""Comparisons with the config as the experimental unit.

Runs of one config are strongly correlated, and a scenario, topology or coordinator is a set of
configs, so every comparison here works on config means, never on pooled runs:

- scenarios (different configs): Welch's t on the config means of each scenario, with its
  interval of the difference; Mann-Whitney U on the same config means beside it;
- topologies, coordinators and APIs: *paired* where the design pairs them, that is when the
  same config (same scenario, agent models and options) was measured at both levels: the paired t on the
  config-level differences, the exact Wilcoxon signed-rank test beside it; unpaired like the
  scenarios otherwise;
- Holm's correction across each family (one factor and metric), on the t-based p-values (and
  separately on the rank tests');
- solo vs concurrent per agent: the difference of the same agent in the same run, averaged per
  run over agents for "(all agents)", with its interval conditional on the configs and the
  paired t and signed-rank tests on the config-level differences.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from mabench.analysis.stats.estimators import (
    cliffs_delta,
    cliffs_magnitude,
    compare_two,
    conditional_interval,
    holm,
    paired,
)
from mabench.analysis.stats.summaries import COMPARED_METRICS

#: factors whose levels are compared when a study has more than one (api: the API the agents
#: were measured through, Ollama's or OpenAI's)
FACTORS = ("scenario", "topology", "coordinator", "api")
#: solo vs concurrent pairs for the paired analysis
PAIRS: dict[str, tuple[str, str, str]] = {
    "server tok/s": ("solo_tps", "concurrent_tps", "tok/s"),
    "client decode tok/s": ("solo_client_tps", "concurrent_client_tps", "tok/s"),
    "TTFT": ("solo_ttft_ms", "concurrent_ttft_ms", "ms"),
    "agent wall time": ("solo_wall_s", "concurrent_wall_s", "s"),
}
ALL_AGENTS = "(all agents)"
UNPAIRED_TEST = "Welch t on config means (Mann-Whitney U beside)"
PAIRED_TEST = "paired t on config-level differences (Wilcoxon signed-rank beside)"


def config_design(runs: pd.DataFrame, agents: pd.DataFrame) -> pd.DataFrame:
    """One row per config: its factors and the key of what it runs (scenario and each agent's
    model and options in its first run), so that configs differing only in one factor can be
    paired."""
    first = agents[agents["run_index"] == agents.groupby("config_id")["run_index"].transform("min")]
    options = {
        str(cid): json.dumps(
            sorted(
                zip(
                    g["agent"],
                    g["model"].astype(str) if "model" in g else [""] * len(g),
                    g["options_json"].astype(str),
                    strict=True,
                )
            )
        )
        for cid, g in first.groupby("config_id", sort=False)
    }
    cols = [f for f in FACTORS if f in runs]
    design = runs.groupby("config_id", sort=True)[cols].first().reset_index()
    design["options"] = design["config_id"].map(options).fillna("")
    return design


def _pairs(design: pd.DataFrame, factor: str, a: Any, b: Any) -> list[tuple[str, str]]:
    """(config at level a, config at level b) for every config measured at both levels, all
    else (scenario, agent options, the other factors) equal."""
    others = [f for f in FACTORS if f in design and f != factor] + ["options"]
    pairs = []
    for _, g in design.groupby(others, sort=True, dropna=False):
        at_a, at_b = g[g[factor] == a], g[g[factor] == b]
        if len(at_a) == 1 and len(at_b) == 1:
            pairs.append((at_a["config_id"].iloc[0], at_b["config_id"].iloc[0]))
    return pairs


def _config_means(runs: pd.DataFrame, metric: str) -> pd.Series:
    return runs.groupby("config_id", sort=True)[metric].mean().dropna()


def _unpaired_row(means: pd.Series, design: pd.DataFrame, factor: str, a: Any, b: Any) -> dict:
    ca = design.loc[design[factor] == a, "config_id"]
    cb = design.loc[design[factor] == b, "config_id"]
    x, y = means.reindex(ca).dropna(), means.reindex(cb).dropna()
    c = compare_two(x, y)
    return {
        "design": "unpaired",
        "test": UNPAIRED_TEST,
        "n_a": c["n_a"],
        "n_b": c["n_b"],
        "n_pairs": None,
        "mean_a": c["mean_a"],
        "mean_b": c["mean_b"],
        "diff": c["diff"],
        "diff_ci_low": c["diff_low"],
        "diff_ci_high": c["diff_high"],
        "t": c["welch_t"],
        "p": c["welch_p"],
        "rank_p": c["mw_p"],
        "rank_min_p": c["mw_min_p"],
        "cliffs_delta": c["cliffs_delta"],
    }


def _paired_row(means: pd.Series, pairs: list[tuple[str, str]]) -> dict:
    both = [(means.get(ca), means.get(cb)) for ca, cb in pairs]
    both = [(x, y) for x, y in both if x is not None and y is not None]
    x = np.array([v[0] for v in both], dtype=float)
    y = np.array([v[1] for v in both], dtype=float)
    p = paired(x - y)
    return {
        "design": "paired",
        "test": PAIRED_TEST,
        "n_a": len(x),
        "n_b": len(y),
        "n_pairs": len(x),
        "mean_a": float(x.mean()) if len(x) else None,
        "mean_b": float(y.mean()) if len(y) else None,
        "diff": p["mean_diff"],
        "diff_ci_low": p["ci_low"],
        "diff_ci_high": p["ci_high"],
        "t": p["t"],
        "p": p["t_p"],
        "rank_p": p["wilcoxon_p"],
        "rank_min_p": p["wilcoxon_min_p"],
        "cliffs_delta": cliffs_delta(x, y),
    }


def _family(runs: pd.DataFrame, design: pd.DataFrame, factor: str, metric: str) -> list[dict]:
    """Every pair of levels of ``factor`` on ``metric``, Holm-adjusted together."""
    means = _config_means(runs, metric)
    if means.empty:
        return []
    levels = sorted(design[factor].dropna().unique())
    family = []
    for i, a in enumerate(levels):
        for b in levels[i + 1 :]:
            pairs = [] if factor == "scenario" else _pairs(design, factor, a, b)
            row = _paired_row(means, pairs) if pairs else _unpaired_row(means, design, factor, a, b)
            n_runs = runs.groupby(factor)[metric].count()
            family.append(
                {
                    "by": factor,
                    "metric": metric,
                    "a": a,
                    "b": b,
                    "unit": "config",
                    **row,
                    "n_runs_a": int(n_runs.get(a, 0)),
                    "n_runs_b": int(n_runs.get(b, 0)),
                    "magnitude": cliffs_magnitude(row["cliffs_delta"]),
                }
            )
    for r, p, rp in zip(
        family, holm(r["p"] for r in family), holm(r["rank_p"] for r in family), strict=True
    ):
        r["p_holm"], r["rank_p_holm"] = p, rp
        r["significant"] = None if p is None else bool(p < 0.05)
    return family


def comparisons(runs: pd.DataFrame, agents: pd.DataFrame) -> pd.DataFrame:
    """Scenario, topology, coordinator and API comparisons of the compared metrics, config as
    unit."""
    design = config_design(runs, agents)
    rows: list[dict[str, Any]] = []
    for factor in FACTORS:
        if factor not in design or design[factor].nunique(dropna=True) < 2:
            continue
        for metric in COMPARED_METRICS:
            rows.extend(_family(runs, design, factor, metric))
    return pd.DataFrame(rows)


def _run_differences(agents: pd.DataFrame, solo: str, conc: str) -> pd.DataFrame:
    """config_id, run_index and the concurrent - solo difference of these agent rows; several
    agents of one run are averaged into one run-level difference."""
    both = agents[["config_id", "run_index", solo, conc]].dropna()
    both = both.assign(diff=both[conc] - both[solo])
    return both.groupby(["config_id", "run_index"], sort=True, as_index=False).agg(
        diff=("diff", "mean"), solo=(solo, "mean"), conc=(conc, "mean")
    )


def _paired_agent_row(agent: str, label: str, d: pd.DataFrame) -> dict[str, Any]:
    solo, conc, unit = PAIRS[label]
    cond = conditional_interval(d["diff"].to_numpy(float), d["config_id"].to_numpy())
    by_cfg = paired(d.groupby("config_id", sort=True)["diff"].mean())
    mean_solo = float(d["solo"].mean())
    return {
        "agent": agent,
        "quantity": label,
        "solo_column": solo,
        "concurrent_column": conc,
        "unit": unit,
        "n": len(d),
        "n_configs": by_cfg["n"],
        "mean_solo": mean_solo,
        "mean_concurrent": float(d["conc"].mean()),
        "mean_diff": float(d["diff"].mean()),
        "ci_low": cond["low"],
        "ci_high": cond["high"],
        "p": cond["p"],
        "config_ci_low": by_cfg["ci_low"],
        "config_ci_high": by_cfg["ci_high"],
        "config_p": by_cfg["t_p"],
        "wilcoxon_p": by_cfg["wilcoxon_p"],
        "wilcoxon_min_p": by_cfg["wilcoxon_min_p"],
        "rel_change_pct": None if mean_solo == 0 else 100 * float(d["diff"].mean()) / mean_solo,
    }


def solo_vs_concurrent(agents: pd.DataFrame) -> pd.DataFrame:
    """Each agent (and all agents, averaged per run) against itself alone, per quantity."""
    rows = []
    names: Iterable[str] = sorted(agents["agent"].dropna().unique()) if not agents.empty else []
    for agent in [*names, ALL_AGENTS]:
        g = agents if agent == ALL_AGENTS else agents[agents["agent"] == agent]
        for label, (solo, conc, _) in PAIRS.items():
            d = _run_differences(g, solo, conc)
            if len(d):
                rows.append(_paired_agent_row(agent, label, d))
    return pd.DataFrame(rows)


__all__ = [
    "PAIRS",
    "comparisons",
    "config_design",
    "solo_vs_concurrent",
]
