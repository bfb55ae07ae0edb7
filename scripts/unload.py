"""Rule `unload`: forced unload of every model on every server before a config's runs."""

from mabench.jobs.client import run_job
from mabench.jobs.request import JobRequest

sm = snakemake  # noqa: F821 (injected by Snakemake)
run_job(
    JobRequest(
        kind="unload",
        config=dict(sm.config),
        wildcards=dict(sm.wildcards.items()),
        input=dict(sm.input.items()),
        output=list(sm.output),
        log=list(sm.log),
    )
)
