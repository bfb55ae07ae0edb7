"""Rule `start_servers`: start (or reuse) the study's servers and describe a config's servers."""

from mabench.jobs.client import run_job
from mabench.jobs.request import JobRequest

run_job(JobRequest.of_rule("start_servers", snakemake))  # noqa: F821 (injected by Snakemake)
