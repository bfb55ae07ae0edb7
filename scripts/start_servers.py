"""Rule `start_servers`: start (or reuse) the study's servers and describe a config's servers."""

from mabench.steps import rules

sm = snakemake  # noqa: F821 (injected by Snakemake)
with rules.script_logging(sm.log[0]):
    rules.start_servers_step(sm.config, sm.wildcards.config, sm.output[0])
