"""Provenance: the settings the statistics were computed with, where the inputs came from
(methodology fields, file hashes), the :class:`Statistics` container and the stats folder it is
written to and read from (``<name>.parquet`` plus ``summary.json`` with the headline)."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mabench.analysis.tables import read_table
from mabench.measure.records import write_json_atomic

#: the run metrics the executive summary leads with
HEADLINE_METRICS = (
    "seed_efficiency",
    "true_efficiency",
    "interference_efficiency",
    "seed_speedup",
    "true_speedup",
    "interference_speedup",
)

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
        "goodput_ttft_ms": 2000.0,
        "goodput_tpot_ms": 100.0,
        "min_goodput_pct": 90.0,
    },
    "contention": {"legacy_speedup": 1.5, "ttft_ms": 3000.0, "throughput_pct": 70.0},
    "methodology": {},
}

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
    "baseline",
    "n_agents",
    "n_servers",
    "cpus_available",
    "server_threads",
    "server_settings",
    "server_settings_source",
    "isolation_verified",
    "isolation_after_verified",
    "work_matched",
)


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
    ``contention``, ``methodology``), a study config dict (whose ``report:`` block holds
    title/reference/cost/slo), or a :class:`mabench.config.Study`.
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


@dataclass(frozen=True)
class LegacyData:
    """What a legacy dataset or a reference study adds to the statistics, built by the caller
    (statistics never imports a dataset module; see :func:`mabench.steps.legacy.legacy_data`).

    ``reference``: comparison tables keyed ``<reference>_<table>``; ``tr110``: the TR110
    reanalysis tables; ``methodology``: what the legacy dataset's own description says about
    how it was measured (printed in the report's methodology).
    """

    reference: Mapping[str, pd.DataFrame] = field(default_factory=dict)
    tr110: Mapping[str, pd.DataFrame] = field(default_factory=dict)
    methodology: Mapping[str, str] = field(default_factory=dict)


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
    comparisons: pd.DataFrame  # scenario / topology / coordinator, config as the unit
    paired: pd.DataFrame  # solo vs concurrent per agent
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
    latency: pd.DataFrame = field(default_factory=pd.DataFrame)  # P50..P99, max per phase
    slo_attainment: pd.DataFrame = field(default_factory=pd.DataFrame)  # calls meeting the SLO
    coverage: pd.DataFrame = field(default_factory=pd.DataFrame)  # simulated CI coverage
    dropped: pd.DataFrame = field(default_factory=pd.DataFrame)  # values not finite, per metric
    isolation_gaps: pd.DataFrame = field(default_factory=pd.DataFrame)  # configs without unload
    validity: pd.DataFrame = field(default_factory=pd.DataFrame)  # reloads, work, phase order
    flagged_runs: pd.DataFrame = field(default_factory=pd.DataFrame)  # runs a check flagged
    order_balance: pd.DataFrame = field(default_factory=pd.DataFrame)  # order-balanced, effect
    drift: pd.DataFrame = field(default_factory=pd.DataFrame)  # efficiency against start time
    headline_runs: pd.DataFrame = field(default_factory=pd.DataFrame)  # valid runs vs all
    scaling: pd.DataFrame = field(default_factory=pd.DataFrame)  # S(N), eta(N) per series, N
    scaling_fits: pd.DataFrame = field(default_factory=pd.DataFrame)  # Amdahl, USL per series
    scaling_reference: pd.DataFrame = field(default_factory=pd.DataFrame)  # ours beside TR129
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


def methodology(runs: pd.DataFrame) -> pd.DataFrame:
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


def sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def input_sources(
    tables: Mapping[str, pd.DataFrame], sources: Mapping[str, str | Path] | None
) -> pd.DataFrame:
    """One row per input table: its file (when known), rows and sha256."""
    rows = []
    for name, df in tables.items():
        path = Path(sources[name]) if sources and name in sources else None
        rows.append(
            {
                "table": name,
                "path": None if path is None else str(path),
                "rows": len(df),
                "sha256": None if path is None else sha256(path),
            }
        )
    return pd.DataFrame(rows)


def coverage(sizes: set[int]) -> pd.DataFrame:
    """Simulated coverage (%) of the nominal 95 % t-interval of a mean at each sample size, on
    normal and on lognormal data (what the report states instead of promising 95 %)."""
    # here, not at the top: reading saved statistics (the report) needs no scipy
    from mabench.analysis.stats.estimators import COVERAGE_SIMULATIONS, LOGNORMAL_SIGMA, t_coverage

    rows = []
    for n in sorted(s for s in sizes if s >= 2):
        for dist in ("normal", "lognormal"):
            rows.append(
                {
                    "method": "t-interval of the mean",
                    "distribution": dist
                    if dist == "normal"
                    else f"lognormal (sigma {LOGNORMAL_SIGMA:g})",
                    "n": n,
                    "simulations": COVERAGE_SIMULATIONS,
                    "coverage_pct": t_coverage(n, dist),
                }
            )
    return pd.DataFrame(rows)


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


#: what the headline keeps of a summary row
_HEADLINE_KEYS = (
    "n",
    "mean",
    "median",
    "ci_low",
    "ci_high",
    "n_configs",
    "config_ci_low",
    "config_ci_high",
)


def _overall_row(summary: pd.DataFrame, metric: str, **where: Any) -> dict[str, Any] | None:
    """The summary's overall row of a metric (and ``where``), None when it has no value."""
    if summary.empty or "metric" not in summary:
        return None
    picked = (summary["level"] == "overall") & (summary["metric"] == metric)
    for col, value in where.items():
        picked &= summary[col] == value
    row = summary[picked]
    if row.empty or not row.iloc[0]["n"]:
        return None
    return {k: row.iloc[0][k] for k in _HEADLINE_KEYS}


def _headline_metric(stats: Statistics, metric: str) -> dict[str, Any] | None:
    """A headline metric over the runs that passed every check (``sample`` ``valid``) with the
    full sample beside it (``all_runs``); over every run (``sample`` ``all``) when no run
    passed or the statistics predate the valid sample."""
    everything = _overall_row(stats.headline_runs, metric, sample="all") or _overall_row(
        stats.run_summary, metric
    )
    if everything is None:
        return None
    valid = _overall_row(stats.headline_runs, metric, sample="valid")
    if valid is None:
        return {**everything, "sample": "all", "all_runs": everything}
    return {**valid, "sample": "valid", "all_runs": everything}


def headline(stats: Statistics) -> dict[str, Any]:
    """The numbers the executive summary leads with (also in summary.json)."""
    out: dict[str, Any] = {}
    for metric in HEADLINE_METRICS:
        numbers = _headline_metric(stats, metric)
        if numbers:
            out[metric] = numbers
    hr = stats.headline_runs
    out["n_flagged"] = int(hr["n_flagged"].iloc[0]) if "n_flagged" in hr and len(hr) else None
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
    if isinstance(tables, Mapping):
        paths = {k: Path(v) for k, v in tables.items()}
    else:
        paths = {k: Path(tables) / f"{k}.parquet" for k in ("runs", "agents", "calls")}
    out = {k: read_table(paths[k], k).to_pandas() for k in ("runs", "agents", "calls")}
    failures = paths.get("failures", next(iter(paths.values())).parent / "failures.parquet")
    if failures.is_file():
        out["failures"] = read_table(failures, "failures").to_pandas()
    return out
