"""Rule `run`: measure one config x run into one run record (mabench.steps.run_job)."""

from mabench.jobs.client import run_job
from mabench.jobs.request import JobRequest

run_job(JobRequest.of_rule("run", snakemake))  # noqa: F821 (injected by Snakemake)
