"""Measurement validity per config and overall: reloads inside the measured phases with true
efficiency with and without them, the runs whose two phases did different work or whose
servers held something unexpected afterwards (and a list of every flagged run), mean true
efficiency by phase order (solo first vs concurrent first), whose gap shows drift, and the
headline numbers over the runs that passed every check beside the full sample's.

Descriptive only: means of per-run values that :mod:`mabench.measure.metrics` computed and
the aggregate step put in ``runs.parquet``; null where a source did not record them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from mabench.analysis.stats.provenance import HEADLINE_METRICS
from mabench.analysis.stats.summaries import RUN_METRICS, _flag, summarise

#: run columns averaged per config (null where a source did not record them)
VALIDITY_MEANS = (
    "true_efficiency",
    "interference_efficiency",
    "true_efficiency_excl_load",
    "solo_reloads",
    "concurrent_reloads",
    "solo_reload_s",
    "concurrent_reload_s",
)
SOLO_FIRST, CONCURRENT_FIRST = "solo,concurrent", "concurrent,solo"


def solo_concurrent_order(phase_order: pd.Series) -> pd.Series:
    """Each run's order of its solo and concurrent phases (``SOLO_FIRST`` or
    ``CONCURRENT_FIRST``), a sequential phase left out; empty where unknown."""
    order = phase_order.astype(object).where(phase_order.notna(), "")
    return order.map(lambda o: ",".join(p for p in str(o).split(",") if p != "sequential"))


VALID, ALL = "valid", "all"


def _validity_row(g: pd.DataFrame) -> dict[str, Any]:
    """Means of the validity columns, flagged runs, and true efficiency by phase order."""
    row: dict[str, Any] = {"n_runs": len(g)}
    for col in VALIDITY_MEANS:
        values = pd.to_numeric(g[col], errors="coerce") if col in g else pd.Series(dtype=float)
        row[col] = values.mean() if values.notna().any() else None
    for col, name in (("work_matched", "work"), ("isolation_after_verified", "isolation_after")):
        checked = _flag(g[col]).dropna() if col in g else pd.Series(dtype="boolean")
        row[f"{name}_checked"] = len(checked)
        row[f"{name}_failed"] = int((~checked).sum())
    order = solo_concurrent_order(
        g["phase_order"] if "phase_order" in g else pd.Series(None, index=g.index)
    )
    true = pd.to_numeric(g["true_efficiency"], errors="coerce")
    for phases, prefix in ((SOLO_FIRST, "solo_first"), (CONCURRENT_FIRST, "concurrent_first")):
        values = true[(order == phases).to_numpy()].dropna()
        row[f"n_{prefix}"] = len(values)
        row[f"true_efficiency_{prefix}"] = values.mean() if len(values) else None
    first, last = row["true_efficiency_solo_first"], row["true_efficiency_concurrent_first"]
    row["phase_order_gap_pp"] = None if first is None or last is None else first - last
    return row


def validity(runs: pd.DataFrame) -> pd.DataFrame:
    """Per config and overall: mean reloads per run and phase with their time, true
    efficiency with and without the loads, runs whose work differed between the phases or
    whose servers held something unexpected afterwards, and mean true efficiency by phase
    order (solo first vs concurrent first), whose gap shows drift."""
    rows = [{"level": "overall", "group": "all", **_validity_row(runs)}]
    for cid, g in runs.groupby("config_id", sort=True):
        rows.append({"level": "config", "group": cid, **_validity_row(g)})
    return pd.DataFrame(rows)


def flagged_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Every run a check after its phases flagged, with what the check found."""
    columns = ["config_id", "run_index", "validity_flags", "work_diverged", "true_efficiency"]
    if "validity_flags" not in runs:
        return pd.DataFrame(columns=columns)
    flags = runs["validity_flags"].fillna("").astype(str)
    picked = runs.loc[flags != "", [c for c in columns if c in runs]]
    return picked.sort_values(["config_id", "run_index"], kind="stable").reset_index(drop=True)


def passed_every_check(runs: pd.DataFrame) -> np.ndarray:
    """Per run, True when no check after its phases failed: its ``validity_flags`` is empty
    or null (a record of schema 1 ran no check, so none failed)."""
    if "validity_flags" not in runs:
        return np.ones(len(runs), dtype=bool)
    flags = runs["validity_flags"].astype(object).where(runs["validity_flags"].notna(), "")
    return (flags.astype(str) == "").to_numpy(dtype=bool)


def headline(runs: pd.DataFrame, config_scenario: Mapping[str, str]) -> pd.DataFrame:
    """The overall summary of each headline metric (``sample`` = ``valid``: the runs that
    passed every check; ``all``: every run), with ``n_flagged``, the runs left out of the valid
    sample. Columns as in ``run_summary`` (mean, both intervals, ...)."""
    passed = passed_every_check(runs)
    metrics = {m: RUN_METRICS[m] for m in HEADLINE_METRICS}
    frames = []
    for sample, subset in ((VALID, runs[passed]), (ALL, runs)):
        if subset.empty:
            continue
        summary = summarise(subset, metrics, config_scenario, with_topology=False)
        frames.append(summary[summary["level"] == "overall"].assign(sample=sample))
    if not frames:
        return pd.DataFrame()
    out = pd.concat(frames, ignore_index=True)
    order = out["metric"].map(HEADLINE_METRICS.index) * 2 + (out["sample"] == ALL)
    out = out.iloc[np.argsort(order.to_numpy(), kind="stable")].reset_index(drop=True)
    return out.assign(n_flagged=int((~passed).sum()))


__all__ = ["flagged_runs", "headline", "passed_every_check", "validity"]
