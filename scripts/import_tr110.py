"""Rule `import_tr110`: the TR110 result layout -> runs/agents/calls Parquet tables."""

from pathlib import Path

from mabench import pipeline
from mabench.tr110 import import_tr110

with pipeline.script_logging(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    sm = snakemake  # noqa: F821
    out_dir = Path(sm.output.runs).parent
    import_tr110(sm.params.source, out_dir, study=sm.wildcards.study)
    pipeline.write_empty_failures(sm.output.failures)
