"""The Slurm job a measurement runs in, read from the environment Slurm gives a job step.

None outside Slurm. Slurm sets these variables in every job step (``srun``), which is where
the cluster profile's measurement jobs run; the record keeps them so that every run says which
job, node, partition, CPUs and GPUs measured it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from mabench.measure.records import SlurmJob


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        return None


def _ids(value: str | None) -> list[str]:
    return [x.strip() for x in (value or "").split(",") if x.strip()]


def slurm_job(environ: Mapping[str, str] | None = None) -> SlurmJob | None:
    """The Slurm job of this process (``environ``: os.environ), or None outside Slurm."""
    env = os.environ if environ is None else environ
    job_id = env.get("SLURM_JOB_ID")
    if not job_id:
        return None
    return SlurmJob(
        job_id=job_id,
        cluster=env.get("SLURM_CLUSTER_NAME") or None,
        node=env.get("SLURMD_NODENAME") or env.get("SLURM_NODELIST") or "",
        partition=env.get("SLURM_JOB_PARTITION") or None,
        cpus=_int(env.get("SLURM_CPUS_ON_NODE")),
        gpus=_ids(env.get("SLURM_STEP_GPUS") or env.get("SLURM_JOB_GPUS")),
    )
