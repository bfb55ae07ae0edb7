"""The entry point: the three tables and the settings in, a :class:`Statistics` out."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from mabench import __version__
from mabench.analysis.stats import advice, summaries
from mabench.analysis.stats.advice import HOURS_PER_MONTH
from mabench.analysis.stats.estimators import WILCOXON_MIN_N
from mabench.analysis.stats.provenance import (
    Statistics,
    methodology,
    read_tables,
    resolve_settings,
    sha256,
    write_statistics,
)
from mabench.analysis.stats.summaries import (
    AGENT_METRICS,
    CALL_METRICS,
    RUN_METRICS,
    prepare,
    primary_metric,
    reliability,
)


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

    run_summary = summaries.summarise(runs, RUN_METRICS, cfg_scen, boot)
    agent_summary = summaries.summarise(
        agents, AGENT_METRICS, cfg_scen, boot, extra=("agent",), keep_empty_overall=False
    )
    call_summary = summaries.summarise(
        calls,
        CALL_METRICS,
        cfg_scen,
        boot,
        extra=("phase",),
        with_topology=False,
        keep_empty_overall=False,
    )
    slo = advice.slo(runs, agents, calls, settings)

    sources_rows = []
    for name, df in (("runs", runs), ("agents", agents), ("calls", calls)):
        path = Path(sources[name]) if sources and name in sources else None
        sources_rows.append(
            {
                "table": name,
                "path": None if path is None else str(path),
                "rows": len(df),
                "sha256": None if path is None else sha256(path),
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
        ttft_split=summaries.ttft_split(calls, agents, cfg_scen),
        contention=summaries.contention(runs),
        top_configs=summaries.ranked_configs(run_summary, ranked, top=True),
        bottom_configs=summaries.ranked_configs(run_summary, ranked, top=False),
        top_runs=summaries.ranked_runs(runs, ranked, top=True),
        bottom_runs=summaries.ranked_runs(runs, ranked, top=False),
        outliers=summaries.outliers(runs, ranked),
        consistency=summaries.consistency(run_summary),
        comparisons=summaries.comparisons(runs),
        paired=summaries.paired(agents, boot),
        recommendations=advice.recommendations(runs, run_summary, slo, metric),
        cost=advice.cost(runs, agents, settings),
        slo=slo,
        slo_configs=advice.slo_configs(slo),
        seed_vs_true=summaries.seed_vs_true(runs, boot),
        limitations=advice.limitations(runs, agents, calls, run_summary, metric),
        per_config=summaries.per_config(runs, agents, run_summary),
        methodology=methodology(runs),
        inputs=pd.DataFrame(sources_rows),
        reliability=reliability(runs, failures),
        reference=reference,
        tr110=tr110,
    )


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
