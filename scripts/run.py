"""Rule `run`: measure one config x run into one run record (mabench.steps.run_job)."""

from mabench.steps import rules

sm = snakemake  # noqa: F821 (injected by Snakemake)
with rules.script_logging(sm.log[0]):
    rules.run_step(
        sm.config,
        sm.wildcards.config,
        int(sm.wildcards.run),
        sm.output[0],
        attempt=int(sm.resources.attempt),
    )
