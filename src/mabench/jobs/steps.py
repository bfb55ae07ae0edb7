"""What each rule job does, from its :class:`~mabench.jobs.request.JobRequest`: the same in a
rule script's own process and in a job host's child."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path

from mabench.jobs.launch import ensure_host
from mabench.jobs.request import JobRequest
from mabench.servers.pool import Owner
from mabench.steps import rules


def start_servers(job: JobRequest) -> None:
    study = rules.load(job.config)
    paths = rules.StudyPaths.of(study.name)
    rules.start_servers_step(study, job.wildcards["config"], job.output[0], paths)


def unload(job: JobRequest) -> None:
    study = rules.load(job.config)
    paths = rules.StudyPaths.of(study.name)
    rules.unload_step(study, job.wildcards["config"], job.output[0], paths, job.input["servers"])


def run(job: JobRequest) -> None:
    """Run ``job``'s step with its log as the rule script's (``rules.script_logging``)."""
    with rules.script_logging(job.log[0]):
        STEPS[job.kind](job)


def measure_run(job: JobRequest) -> None:
    study = rules.load(job.config)
    paths = rules.StudyPaths.of(study.name)
    rules.run_step(
        study,
        job.wildcards["config"],
        int(job.wildcards["run"]),
        job.output[0],
        paths,
        job.attempt,
    )


STEPS: dict[str, Callable[[JobRequest], None]] = {
    "start_servers": start_servers,
    "unload": unload,
    "run": measure_run,
}


def host_log(job: JobRequest) -> Path:
    """Where the job host of ``job``'s study on this machine logs (beside its servers')."""
    study = rules.load(job.config)
    return rules.StudyPaths.of(study.name).logs / "servers" / socket.gethostname() / "jobs.log"


def start_host_for_later_jobs(job: JobRequest) -> bool:
    """After a job ran in its own process: start the job host of its invocation, so that the
    jobs after it skip the imports. Only for the rules whose servers the pool starts: the
    servers and the host go together (both die with the invocation)."""
    owner = Owner.current()
    if owner.pid == os.getpid():  # not under a Snakemake that claimed ownership
        return False
    return ensure_host(owner.pid, owner.create_time, Path(job.cwd) / host_log(job))
