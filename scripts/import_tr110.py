"""Rule `import_tr110`: the TR110 result layout -> runs/agents/calls Parquet tables."""

from pathlib import Path

from mabench import pipeline
from mabench.datasets.tr110 import import_tr110

sm = snakemake  # noqa: F821 (injected by Snakemake)
with pipeline.script_logging(sm.log[0]):
    import_tr110(sm.params.source, Path(sm.output.runs).parent, study=sm.wildcards.study)
    pipeline.write_empty_failures(sm.output.failures)
