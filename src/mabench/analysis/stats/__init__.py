"""Statistics over a study's ``runs``, ``agents`` and ``calls`` tables.

One entry point, :func:`compute_statistics`, turns the three tables (as DataFrames, see
:mod:`mabench.analysis.tables`) and the study's report settings into a :class:`Statistics`:
every number the technical report prints, as DataFrames. :func:`write_statistics` writes them
as Parquet plus a ``summary.json`` under ``results/<study>/stats/``; :func:`load_statistics`
reads them back (the report renders from those files only, so changing a template never
recomputes statistics).

Owns, by concern:

- ``estimators``: pure functions on arrays (t-intervals and their simulated coverage, the
  intervals conditional on the configs and over config means, describe, Wilson, Holm,
  Cliff's delta, IQR fences, Welch, paired and rank tests, ICC);
- ``summaries``: the grouped descriptive tables (per level and metric, contention, rankings,
  outliers, the TTFT split, seed vs true, values dropped as not finite);
- ``comparisons``: scenarios, topologies and coordinators with the config as the unit
  (paired where the design pairs), Holm across each family; solo vs concurrent per agent;
- ``latency``: P50/P90/P95/P99/max of TTFT, inter-token latency, time per output token and
  end-to-end latency per phase; SLO attainment (% of calls within the study's TTFT and TPOT
  targets) and good calls per second;
- ``advice``: recommendations, SLO checks, the cost model, limitations;
- ``validity``: reloads inside the measured phases beside both true efficiencies, the runs
  the checks after the phases flagged, true efficiency by phase order, and the headline numbers
  over the runs that passed every check beside the full sample's;
- ``order``: the order-balanced estimate and the order effect per config and for the study,
  and drift (efficiency against each run's start time), the config a fixed effect;
- ``scaling``: per scaling series (a scenario whose configs cover at least three agent counts,
  one of them 1): S(N) and eta(N) with intervals, TR129's throughput normalisation, Amdahl and
  USL fits with bootstrap intervals, and TR129's published numbers beside ours;
- ``provenance``: settings, methodology fields, input hashes, the coverage table, the
  :class:`Statistics` container and the stats folder (writing, reading, the headline);
- ``compute``: :func:`compute_statistics` and :func:`run`, which assemble the above.

May import: :mod:`mabench.analysis.tables` and :mod:`mabench.measure.records` (writing JSON).
Never imports a dataset module (:mod:`mabench.datasets`): the caller builds the reference
comparisons and the legacy reanalysis and passes them in as :class:`LegacyData`.
"""

import importlib
from typing import Any

#: where each public name lives. Imported on first use (PEP 562): the report job reads saved
#: statistics (``provenance``) and should not pay for scipy, which only computing them needs.
_HOME = {
    "compute_statistics": "compute",
    "run": "compute",
    **dict.fromkeys(
        (
            "cliffs_delta",
            "cliffs_magnitude",
            "compare_two",
            "describe",
            "holm",
            "iqr_fences",
            "t_interval",
            "wilson_ci",
        ),
        "estimators",
    ),
    **dict.fromkeys(
        (
            "DEFAULT_SETTINGS",
            "LegacyData",
            "Statistics",
            "headline",
            "load_statistics",
            "read_tables",
            "resolve_settings",
            "write_statistics",
        ),
        "provenance",
    ),
    **dict.fromkeys(("TR129_REFERENCE", "scaling_series", "scaling_tables"), "scaling"),
    **dict.fromkeys(
        ("AGENT_METRICS", "CALL_METRICS", "RUN_METRICS", "prepare", "primary_metric"),
        "summaries",
    ),
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


__all__ = [
    "AGENT_METRICS",
    "CALL_METRICS",
    "DEFAULT_SETTINGS",
    "RUN_METRICS",
    "TR129_REFERENCE",
    "LegacyData",
    "Statistics",
    "cliffs_delta",
    "cliffs_magnitude",
    "compare_two",
    "compute_statistics",
    "describe",
    "headline",
    "holm",
    "iqr_fences",
    "load_statistics",
    "prepare",
    "primary_metric",
    "read_tables",
    "resolve_settings",
    "run",
    "scaling_series",
    "scaling_tables",
    "t_interval",
    "wilson_ci",
    "write_statistics",
]
