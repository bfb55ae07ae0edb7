"""Rule `hosts`: runs table -> results/<study>/hosts/ (mabench.analysis.hosts)."""

from mabench import pipeline
from mabench.analysis import hosts

sm = snakemake  # noqa: F821 (injected by Snakemake)
with pipeline.script_logging(sm.log[0]):
    hosts.write_host_strata(sm.input.runs, sm.output[0])
