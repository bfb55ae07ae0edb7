"""The entry point: the three tables and the settings in, a :class:`Statistics` out."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from mabench import __version__
from mabench.analysis.stats import (
    advice,
    comparisons,
    latency,
    order,
    scaling,
    summaries,
    validity,
)
from mabench.analysis.stats.advice import HOURS_PER_MONTH
from mabench.analysis.stats.estimators import icc_oneway
from mabench.analysis.stats.provenance import (
    LegacyData,
    Statistics,
    coverage,
    input_sources,
    methodology,
    read_tables,
    resolve_settings,
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
    legacy: LegacyData | None = None,
) -> Statistics:
    """Every statistic of the report from the three tables.

    ``sources`` (table name -> Parquet path) is recorded for the report's provenance section.
    ``legacy``: the reference comparisons and the legacy dataset's reanalysis and methodology,
    built by the caller (required when the settings name a reference or the runs come from a
    legacy import; statistics never imports a dataset module).
    Handles small n (CIs null below n = 2), all-null columns (e.g. TR110's true efficiency),
    one scenario and one config.
    """
    settings = resolve_settings(settings)
    if runs.empty:
        raise ValueError("the runs table is empty: nothing to analyse")
    attainment = latency.slo_attainment(calls, settings["slo"])  # failed calls count as misses
    runs, agents, calls = prepare(runs, agents, calls)
    legacy = legacy or LegacyData()
    _check_legacy(legacy, _sources_of_data(runs), settings["reference"])
    cfg_scen = runs.drop_duplicates("config_id").set_index("config_id")["scenario"].to_dict()
    metric = primary_metric(runs)
    ranked = [metric] if metric == "seed_efficiency" else [metric, "seed_efficiency"]
    run_summary, agent_summary, call_summary = _summaries(runs, agents, calls, cfg_scen)
    slo = advice.slo(runs, agents, calls, settings, attainment)
    scaled = scaling.scaling_tables(runs, agents)
    return Statistics(
        meta=_meta(runs, agents, calls, settings, legacy),
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
        comparisons=comparisons.comparisons(runs, agents),
        paired=comparisons.solo_vs_concurrent(agents),
        recommendations=advice.recommendations(runs, run_summary, slo, metric),
        cost=advice.cost(runs, agents, settings),
        slo=slo,
        slo_configs=advice.slo_configs(slo),
        seed_vs_true=summaries.seed_vs_true(runs),
        limitations=advice.limitations(runs, agents, calls, run_summary, metric),
        per_config=summaries.per_config(runs, agents, run_summary),
        methodology=methodology(runs),
        inputs=input_sources({"runs": runs, "agents": agents, "calls": calls}, sources),
        reliability=reliability(runs, failures),
        latency=latency.latency(calls, cfg_scen),
        slo_attainment=attainment,
        coverage=coverage(_sample_sizes(runs)),
        isolation_gaps=summaries.isolation_gaps(runs),
        dropped=summaries.dropped(
            {
                "runs": (runs, RUN_METRICS),
                "agents": (agents, AGENT_METRICS),
                "calls": (calls, CALL_METRICS),
            }
        ),
        validity=validity.validity(runs),
        flagged_runs=validity.flagged_runs(runs),
        order_balance=order.order_balance(runs),
        drift=order.drift(runs),
        headline_runs=validity.headline(runs, cfg_scen),
        scaling=scaled.levels,
        scaling_fits=scaled.fits,
        scaling_reference=scaled.reference,
        reference=dict(legacy.reference),
        tr110=dict(legacy.tr110),
    )


def _summaries(
    runs: pd.DataFrame,
    agents: pd.DataFrame,
    calls: pd.DataFrame,
    cfg_scen: Mapping[str, str],
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The descriptive tables per run, per agent and run, and per call and phase (a run's
    calls are not independent: its mean is the unit of the calls' intervals)."""
    run_summary = summaries.summarise(runs, RUN_METRICS, cfg_scen)
    agent_summary = summaries.summarise(
        agents, AGENT_METRICS, cfg_scen, extra=("agent",), keep_empty_overall=False
    )
    call_summary = summaries.summarise(
        calls,
        CALL_METRICS,
        cfg_scen,
        extra=("phase",),
        with_topology=False,
        keep_empty_overall=False,
        by_run=True,
    )
    return run_summary, agent_summary, call_summary


def _sample_sizes(runs: pd.DataFrame) -> set[int]:
    """The sample sizes whose interval coverage the report states: 2, 3, 5 and 20, the runs
    per config of this study and its number of configs."""
    per_config = runs.groupby("config_id").size()
    return {2, 3, 5, 20, int(per_config.min()), int(per_config.max()), len(per_config)}


def _icc(runs: pd.DataFrame, metric: str) -> float | None:
    both = runs[["config_id", metric]].dropna()
    return icc_oneway(both[metric].to_numpy(float), both["config_id"].to_numpy())


def _sources_of_data(runs: pd.DataFrame) -> list[str]:
    return sorted(runs["source"].dropna().unique()) if "source" in runs else []


def _has_ttft_split(agents: pd.DataFrame, calls: pd.DataFrame) -> bool:
    return bool(
        (not calls.empty and calls[["load_ms", "prompt_eval_ms"]].notna().all(axis=1).any())
        or agents[["concurrent_load_ms", "concurrent_prompt_eval_ms"]].notna().all(axis=1).any()
    )


def _meta(
    runs: pd.DataFrame,
    agents: pd.DataFrame,
    calls: pd.DataFrame,
    settings: Mapping[str, Any],
    legacy: LegacyData,
) -> dict[str, Any]:
    """What the report says about the study as a whole (``summary.json``'s ``meta``)."""
    per_config = runs.groupby("config_id").size()
    return {
        "study": settings["study"],
        "title": settings["title"],
        "description": settings.get("description") or "",
        "sources": _sources_of_data(runs),
        "primary_metric": primary_metric(runs),
        "has_solo": bool(runs["true_efficiency"].notna().any()),
        "has_calls": not calls.empty,
        "has_ttft_split": _has_ttft_split(agents, calls),
        "n_runs": len(runs),
        "n_configs": int(runs["config_id"].nunique()),
        "n_scenarios": int(runs["scenario"].nunique()),
        "scenarios": sorted(runs["scenario"].dropna().unique().tolist()),
        "configs": sorted(runs["config_id"].unique().tolist()),
        "agents": sorted(agents["agent"].dropna().unique().tolist()) if not agents.empty else [],
        "apis": sorted(runs["api"].dropna().unique().tolist()) if "api" in runs else [],
        "topologies": sorted(runs["topology"].dropna().unique().tolist())
        if "topology" in runs
        else [],
        "runs_per_config_min": int(per_config.min()),
        "runs_per_config_max": int(per_config.max()),
        "n_agent_rows": len(agents),
        "n_call_rows": len(calls),
        "settings": settings,
        "mabench_version": __version__,
        "icc": _icc(runs, primary_metric(runs)),
        "hours_per_month": HOURS_PER_MONTH,
        "legacy_methodology": dict(legacy.methodology),
        "scaling_reference": {
            "source": scaling.TR129_REFERENCE.source,
            "machine": scaling.TR129_REFERENCE.machine,
            "shape": scaling.TR129_REFERENCE.shape,
        },
    }


def _check_legacy(legacy: LegacyData, sources: list[str], references: list[str]) -> None:
    """The tables a legacy source or a named reference needs were passed in (statistics never
    imports a dataset module: :func:`mabench.steps.legacy.legacy_data` builds them)."""
    if "tr110" in sources and not legacy.tr110:
        raise ValueError(
            "the runs come from the TR110 import but no TR110 reanalysis tables were passed: "
            "call compute_statistics(..., legacy=mabench.steps.legacy.legacy_data(runs, settings))"
        )
    missing = [r for r in references if not any(k.startswith(f"{r}_") for k in legacy.reference)]
    if missing:
        raise ValueError(
            f"the settings name the reference dataset(s) {', '.join(missing)} but no reference "
            "tables were passed: call compute_statistics(..., "
            "legacy=mabench.steps.legacy.legacy_data(runs, settings))"
        )


def run(
    tables: str | Path | Mapping[str, str | Path],
    out_dir: str | Path,
    settings: Mapping[str, Any] | Any | None = None,
    legacy: Callable[[pd.DataFrame, Mapping[str, Any]], LegacyData] | None = None,
) -> dict[str, Path]:
    """Tables in, statistics files out: what the pipeline's statistics rule calls.

    ``legacy``: builds the :class:`LegacyData` from the runs table and the resolved settings
    (:func:`mabench.steps.legacy.legacy_data`); needed when the settings name a reference or the
    tables are a legacy import.
    """
    if isinstance(tables, Mapping):
        paths = {k: Path(v) for k, v in tables.items()}
    else:
        paths = {k: Path(tables) / f"{k}.parquet" for k in ("runs", "agents", "calls")}
    t = read_tables(paths)
    resolved = resolve_settings(settings)
    stats = compute_statistics(
        t["runs"],
        t["agents"],
        t["calls"],
        resolved,
        sources={k: v for k, v in paths.items() if k in ("runs", "agents", "calls")},
        failures=t.get("failures"),
        legacy=None if legacy is None else legacy(t["runs"], resolved),
    )
    return write_statistics(stats, out_dir)
