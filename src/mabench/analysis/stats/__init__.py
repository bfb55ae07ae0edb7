"""Statistics over a study's ``runs``, ``agents`` and ``calls`` tables.

One entry point, :func:`compute_statistics`, turns the three tables (as DataFrames, see
:mod:`mabench.analysis.tables`) and the study's report settings into a :class:`Statistics`:
every number the technical report prints, as DataFrames. :func:`write_statistics` writes them
as Parquet plus a ``summary.json`` under ``results/<study>/stats/``; :func:`load_statistics`
reads them back (the report renders from those files only, so changing a template never
recomputes statistics).

Owns, by concern:

- ``estimators``: pure functions on arrays (bootstrap and other CIs, describe, Wilson, Holm,
  Cliff's delta, IQR fences, two-sample tests);
- ``summaries``: the grouped descriptive tables (per level and metric, contention, rankings,
  outliers, comparisons, paired solo vs concurrent, the TTFT split, seed vs true);
- ``advice``: recommendations, SLO checks, the cost model, limitations;
- ``provenance``: settings, methodology fields, input hashes, the :class:`Statistics` container
  and the stats folder (writing, reading, the headline);
- ``compute``: :func:`compute_statistics` and :func:`run`, which assemble the above.

May import: :mod:`mabench.analysis.tables` and :mod:`mabench.measure.records` (writing JSON).
Never imports a dataset module (:mod:`mabench.datasets`): the caller builds the reference
comparisons and the legacy reanalysis and passes them in as :class:`LegacyData`.
"""

from mabench.analysis.stats.compute import compute_statistics, run
from mabench.analysis.stats.estimators import (
    bootstrap_ci,
    cliffs_delta,
    cliffs_magnitude,
    compare_two,
    describe,
    holm,
    iqr_fences,
    wilson_ci,
)
from mabench.analysis.stats.provenance import (
    DEFAULT_SETTINGS,
    LegacyData,
    Statistics,
    headline,
    load_statistics,
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
)

__all__ = [
    "AGENT_METRICS",
    "CALL_METRICS",
    "DEFAULT_SETTINGS",
    "RUN_METRICS",
    "LegacyData",
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
    "prepare",
    "primary_metric",
    "read_tables",
    "resolve_settings",
    "run",
    "wilson_ci",
    "write_statistics",
]
