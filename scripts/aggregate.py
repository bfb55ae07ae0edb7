"""Rule `aggregate`: run records -> runs/agents/calls/failures Parquet tables."""

from pathlib import Path

from mabench import pipeline
from mabench.analysis.aggregate import aggregate

sm = snakemake  # noqa: F821 (injected by Snakemake)
with pipeline.script_logging(sm.log[0]):
    aggregate(
        sm.input.records,
        Path(sm.output.runs).parent,
        failures_dir=sm.params.failures_dir,
        workers=sm.threads,
    )
