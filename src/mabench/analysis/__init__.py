"""From run records to the technical report: tables, statistics, figures, Markdown.

Owns the aggregation of run records into Parquet tables (``aggregate``, ``tables``), the
statistics (``stats``), the figures (``plots``) and the Jinja-rendered report (``report``,
``markdown``).

May import: ``measure.records`` (the run record it reads). Never imports ``servers``; it
measures nothing.
"""
