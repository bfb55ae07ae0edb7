"""Benchmark 6 -- Slurm overhead per job: what a measurement job costs the scheduler way.

Needs a running Slurm with accounting (``tests/cluster/slurm.sh up``, or a real cluster:
``SBATCH_PARTITION``/``SBATCH_ACCOUNT`` as for ``profiles/slurm``); skipped where ``sinfo``
does not answer.

A chain of K trivial jobs (each depends on the previous one, so exactly one is in the queue at
a time) goes through ``snakemake --executor slurm`` with the executor settings of
``profiles/slurm`` (job states from squeue; the plugin's polling: first status check 40 s after
a submission, then every 10 s longer while nothing finished). Each job's body writes its ``SLURM_JOB_ID`` and the
time it began, then sleeps ``BODY_S``. Per job, from the accounting (1 s resolution) and the
body's own clock:

* ``queue_s``: submission to start (``sacct`` Start − Submit);
* ``startup_s``: job start to the rule's first command (the job's own Snakemake: the batch
  step's, then the job step's under ``srun``);
* ``detect_s``: job end to the submission of the next job, i.e. until the submitting Snakemake
  saw the job finish (its status poll) and submitted the next one;
* ``overhead_s``: the job's time outside its body, ``queue + startup + (end − body end) +
  detect``.

The grouping decision in docs/cluster.md weighs ``overhead_s`` against a config's server
start and model load (from the smoke study's logs and run records).
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks.common import WORK_DIR, Result, log

TITLE = "Slurm overhead per job: submission to start, start-up inside the job, end to detection"
BODY_S = 5

SNAKEFILE = """
K = int(config["chain"])


rule all:
    input:
        f"chain/{K}.txt",


rule link:
    input:
        lambda w: [] if int(w.i) == 1 else f"chain/{int(w.i) - 1}.txt",
    output:
        "chain/{i}.txt",
    shell:
        'echo "$SLURM_JOB_ID $(date +%s.%N)" > {output} && sleep %(body)d'
"""


def _sacct(job_id: str) -> dict[str, float]:
    out = subprocess.run(
        ["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "Submit,Start,End"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    submit, start, end = out.split("|")
    return {
        k: datetime.fromisoformat(v).timestamp()
        for k, v in zip(("submit", "start", "end"), (submit, start, end), strict=True)
    }


def run_chain(k: int, work: Path) -> dict[str, Any]:
    """Run the chain of ``k`` jobs; per-job times and the whole chain's wall time."""
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    (work / "Snakefile").write_text(SNAKEFILE.replace("%(body)d", str(BODY_S)))
    cmd = [sys.executable, "-m", "snakemake", "--executor", "slurm", "--jobs", "1"]
    cmd += ["--slurm-status-command", "squeue"]  # as profiles/slurm
    cmd += ["--default-resources", "runtime=5"]
    cmd += [
        f"slurm_partition='{os.environ.get('SBATCH_PARTITION', '')}'",
        f"slurm_account='{os.environ.get('SBATCH_ACCOUNT', '')}'",
    ]
    cmd += ["--config", f"chain={k}"]
    started = time.time()
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=60 * (3 + k))
    wall = time.time() - started
    if proc.returncode != 0:
        raise RuntimeError(f"snakemake exited {proc.returncode}: {proc.stderr[-3000:]}")
    jobs = []
    for i in range(1, k + 1):
        job_id, body_start = (work / "chain" / f"{i}.txt").read_text().split()
        jobs.append({"i": i, "job_id": job_id, "body_start": float(body_start), **_sacct(job_id)})
    rows = []
    for this, nxt in zip(jobs, [*jobs[1:], None], strict=True):
        row = {
            "job_id": this["job_id"],
            "queue_s": this["start"] - this["submit"],
            "startup_s": this["body_start"] - this["start"],
            "teardown_s": this["end"] - (this["body_start"] + BODY_S),
            "detect_s": None if nxt is None else nxt["submit"] - this["end"],
        }
        rows.append(row)
    return {"wall_s": wall, "jobs": rows, "command": " ".join(cmd)}


def _no_slurm() -> str | None:
    """Why no Slurm answers here, or None."""
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        return "no sbatch or sinfo"
    try:
        subprocess.run(["sinfo", "-h"], capture_output=True, check=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"sinfo does not answer: {exc}"
    return None


def _median(rows: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in rows if r[key] is not None)


def run(quick: bool = False) -> Result:
    res = Result("slurm_overhead", TITLE)
    why = _no_slurm()
    if why:
        return res.skipped(f"no Slurm here ({why}): tests/cluster/slurm.sh up brings one up")
    k = 3 if quick else 6
    log(f"slurm_overhead: a chain of {k} jobs through snakemake --executor slurm")
    chain = run_chain(k, WORK_DIR / "slurm_overhead")
    rows = chain["jobs"]
    summary = {
        key: _median(rows, key) for key in ("queue_s", "startup_s", "teardown_s", "detect_s")
    }
    summary["overhead_s"] = sum(summary.values())
    res.details.update(chain)
    res.details["median"] = summary
    res.details["body_s"] = BODY_S
    res.notes.append(
        "per job (median of {k}): submission to start {queue_s:.0f} s, start-up in the job "
        "{startup_s:.1f} s, end to detection {detect_s:.0f} s; {overhead_s:.0f} s outside the "
        "job's body".format(k=k, **summary)
    )
    return res
