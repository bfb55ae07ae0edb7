"""From run records to the technical report: tables, statistics, figures, Markdown.

Owns the aggregation of run records into Parquet tables (``aggregate``, ``tables``), the
checks that every file it reads belongs where it is (``integrity``), the statistics
(``stats``, a package split by concern), the figures (``plots``), the runs by host and
hardware (``hosts``) and the Jinja-rendered report (``report``, ``markdown``).

May import: ``measure.records`` (the run record it reads) and ``measure.collector``. Never imports
``servers``; it measures nothing. Never imports ``datasets``: the reference comparisons, the legacy
reanalysis and the legacy methodology are built by the caller (:mod:`mabench.steps.legacy`) and
passed in (:class:`mabench.analysis.stats.LegacyData`); the report reads them from the
statistics files.
"""
