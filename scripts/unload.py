"""Rule `unload`: forced unload of every model on every server before a config's runs."""

from mabench.steps import rules

sm = snakemake  # noqa: F821 (injected by Snakemake)
with rules.script_logging(sm.log[0]):
    rules.unload_step(sm.config, sm.wildcards.config, sm.output[0], sm.input.servers)
