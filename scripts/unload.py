"""Rule `unload`: forced unload of every model on every server before a config's runs."""

from mabench.jobs.client import run_job
from mabench.jobs.request import JobRequest

run_job(JobRequest.of_rule("unload", snakemake))  # noqa: F821 (injected by Snakemake)
