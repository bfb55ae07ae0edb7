"""Rule `start_servers`: start (or reuse) the study's servers and describe a config's servers."""

from mabench.jobs.client import run_job
from mabench.jobs.request import JobRequest

sm = snakemake  # noqa: F821 (injected by Snakemake)
run_job(
    JobRequest(
        kind="start_servers",
        config=dict(sm.config),
        wildcards=dict(sm.wildcards.items()),
        output=list(sm.output),
        log=list(sm.log),
    )
)
