"""Rule `hosts`: runs table -> results/<study>/hosts/ (mabench.analysis.hosts)."""

from mabench.analysis import hosts
from mabench.steps import rules

sm = snakemake  # noqa: F821 (injected by Snakemake)
with rules.script_logging(sm.log[0]):
    hosts.write_host_strata(sm.input.runs, sm.output[0])
