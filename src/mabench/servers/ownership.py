"""Which process owns the servers of this invocation on this host.

The Snakefile claims ownership for the Snakemake process (``MABENCH_OWNER_PID``, inherited by
every job); a claim means that process only on the host and Slurm job it was made in
(``MABENCH_OWNER_SCOPE``). A claim is these two variables of this process's environment and
nothing else: it starts nothing and writes nothing, so a Snakefile that only plans (``-n``,
``--dag``, ``--lint``) may make it. Kept apart from the pool: the progress line
(:mod:`mabench.steps.progress`) reads the claim without the pool's imports.
"""

from __future__ import annotations

import os
import socket

OWNER_ENV = "MABENCH_OWNER_PID"
#: where the PID in ``MABENCH_OWNER_PID`` means that process: ``<host>/<Slurm job id>``
OWNER_SCOPE_ENV = "MABENCH_OWNER_SCOPE"


def owner_scope() -> str:
    """This host and the Slurm job this process runs in (empty outside Slurm)."""
    return f"{socket.gethostname()}/{os.environ.get('SLURM_JOB_ID', '')}"


def claim_ownership(*, invocation: bool) -> None:
    """Make this process the owner of the servers its jobs start (the Snakefile calls it).

    The invocation the user started always claims. Any other Snakemake (a job's own, inside a
    cluster job) claims only when no process of its host and Slurm job has: in a cluster job the
    first Snakemake (the job's batch step) owns the servers, so the job steps that run a
    config's start-up, unload and runs share them, and they stop when the job ends.
    """
    if (
        not invocation
        and os.environ.get(OWNER_ENV)
        and os.environ.get(OWNER_SCOPE_ENV) == owner_scope()
    ):
        return
    os.environ[OWNER_ENV] = str(os.getpid())
    os.environ[OWNER_SCOPE_ENV] = owner_scope()


def claimed_owner_pid() -> int | None:
    """The owner this process's environment names, if the claim was made here."""
    env = os.environ.get(OWNER_ENV)
    scope = os.environ.get(OWNER_SCOPE_ENV)
    if not env or scope not in (None, owner_scope()):
        return None
    try:
        return int(env)
    except ValueError:
        return None
