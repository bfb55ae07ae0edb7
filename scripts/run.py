"""Rule `run`: measure one config x run into one run record (mabench.run_job)."""

from mabench.jobs.client import run_job
from mabench.jobs.request import JobRequest

sm = snakemake  # noqa: F821 (injected by Snakemake)
run_job(
    JobRequest(
        kind="run",
        config=dict(sm.config),
        wildcards=dict(sm.wildcards.items()),
        output=list(sm.output),
        log=list(sm.log),
        attempt=int(sm.resources.attempt),
    )
)
