"""Run the real Snakemake workflow as a subprocess in a scratch working directory."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
SNAKEFILE = ROOT / "Snakefile"
STUDIES = ROOT / "workflow" / "studies"
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def snakemake(
    workdir: Path,
    *args: str,
    configfile: Path | None = None,
    timeout: float = 900,
    env: dict[str, str] | None = None,
    check: bool = False,
) -> subprocess.CompletedProcess[str]:
    """``snakemake -s <repo>/Snakefile --directory <workdir> [--configfile F] ARGS``."""
    cmd = [*SNAKEMAKE, "-s", str(SNAKEFILE), "--directory", str(workdir), "--cores", "2", *args]
    if configfile is not None:  # last: --configfile takes every following word
        cmd += ["--configfile", str(configfile)]
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=workdir,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
        )
    return proc


def planned_jobs(output: str) -> dict[str, int]:
    """The "Job stats" table of a (dry) run: rule -> job count (``total`` excluded)."""
    counts: dict[str, int] = {}
    in_table = False
    for line in output.splitlines():
        if line.startswith("Job stats:"):
            in_table, counts = True, {}
            continue
        if in_table:
            m = re.match(r"^(\S+)\s+(\d+)$", line.strip())
            if m and m.group(1) != "total":
                counts[m.group(1)] = int(m.group(2))
            elif line.strip().startswith("total"):
                in_table = False
    return counts


def planned_outputs(output: str) -> list[str]:
    return re.findall(r"^\s+output: (.+)$", output, flags=re.M)


def fake_ollama_study(path: Path, fake_ollama: Path, name: str, **extra: Any) -> Path:
    """A small study on the ``ollama`` backend with the fake ``ollama`` binary (tests/conftest):
    one config, 3 runs, no retries unless ``extra`` says otherwise; written to ``path``."""
    study = {
        "study": name,
        "runs": 3,
        "retries": 0,
        "backend": {"kind": "ollama", "ollama_binary": str(fake_ollama), "startup_timeout_s": 30},
        "workloads": {
            "collector": {"calls": [{"prompt": "collector_analyse.md.j2", "num_predict": 8}] * 2},
            "insight": {"calls": [{"prompt": "insight_insights.md.j2", "num_predict": 8}] * 2},
        },
        "configs": [{"id": "c1", "scenario": "chimera_homo"}],
        **extra,
    }
    path.write_text(yaml.safe_dump(study))
    return path
