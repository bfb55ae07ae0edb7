"""The smoke study on a real Slurm cluster through `--workflow-profile profiles/slurm`.

One invocation measures the study while a watcher follows the cluster: it cancels (scancel)
the job of a run once another run of the same config is recorded and this one is measuring a
phase, and notes every server process with the Slurm job it belongs to. Then:

- every run record came from its own Slurm job of this test, on this node, in the test
  partition (one job per run: a record is its job's only output);
- no server outlived its job (not a completed one, not the cancelled one);
- the cancel failed only the run it measured: every record written before it, of that config
  too, is still there after the first invocation and byte-identical after the next one, which
  measures exactly the cancelled run and produces the report.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import psutil
import pytest

from mabench.config import load_study
from mabench.measure.records import read_record

ROOT = Path(__file__).resolve().parents[2]
STUDY_FILE = ROOT / "workflow" / "studies" / "smoke.yaml"
STUDY = load_study(STUDY_FILE)
PARTITION = ACCOUNT = "mabench"  # tests/cluster/slurm.sh
# Two invocations of the smoke study through Slurm: about 4 minutes each here, polls included.
pytestmark = pytest.mark.timeout(2400)
SERVER_MODULES = ("mabench.servers.embedded", "mabench.servers.supervise")
#: Slurm sends SIGTERM at scancel and SIGKILL KillWait (30 s, the default) later; the owner's
#: death stops a server within the watchdog's poll (0.2 s) and grace (5 s). Generous for a
#: loaded 2-core machine: a server seen this long after its job ended outlived it.
OUTLIVE_BOUND_S = 30 + 5 + 25


def sh(*cmd: str) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


@dataclass(frozen=True)
class Job:
    """What a measurement job does: its rules, its config and, for a run's job, the run."""

    rules: frozenset[str]
    config: str
    run: int | None

    @property
    def record(self) -> str:
        return f"runs/{self.config}/run_{self.run}.json"


def job_of(job_id: str) -> Job | None:
    """The job's targets, from its batch script (``--target-jobs rule:key=value,...``)."""
    script = sh("scontrol", "write", "batch_script", job_id, "-")
    targets = script.partition("--target-jobs")[2].partition("--")[0]
    found = [
        (rule, dict(pair.split("=", 1) for pair in wildcards.split(",")))
        for rule, wildcards in re.findall(r"(\w+):((?:\w+=[\w.-]+,?)+)", targets)
    ]
    configs = {w.get("config") for _, w in found}
    if not found or len(configs) != 1 or None in configs:
        return None
    runs = {int(w["run"]) for rule, w in found if rule == "run"}
    return Job(
        frozenset(r for r, _ in found), configs.pop(), runs.pop() if len(runs) == 1 else None
    )


def job_end(job_id: str) -> tuple[str, float]:
    """(state, end time as a Unix timestamp) of a finished job, from the accounting."""
    deadline = time.monotonic() + 60
    while True:
        out = sh("sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State,End").strip()
        state, _, end = out.partition("|")
        if end and end != "Unknown":
            return state.split()[0], datetime.fromisoformat(end).timestamp()
        assert time.monotonic() < deadline, f"job {job_id} has no end in sacct: {out!r}"
        time.sleep(1)


def job_elapsed_s(job_id: str) -> int:
    """How long a finished job held its node, from the accounting."""
    return int(sh("sacct", "-n", "-X", "-P", "-j", job_id, "-o", "ElapsedRaw").split()[0])


@dataclass
class Watcher:
    """Follows the cluster while Snakemake runs: cancels a run's job once another run of its
    config is recorded, and notes when each server process of each Slurm job was last seen."""

    results: Path
    cancel_a_run: bool
    jobs: dict[str, Job] = field(default_factory=dict)  # Slurm job id -> what it does
    cancelled: str | None = None
    last_seen: dict[str, float] = field(default_factory=dict)  # job id -> time
    servers: dict[int, str] = field(default_factory=dict)  # server pid -> job id
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            self._see_servers()
            self._see_jobs()
            time.sleep(0.5)

    def run_jobs(self) -> dict[str, Job]:
        return {j: job for j, job in self.jobs.items() if job.rules == {"run"}}

    def _see_servers(self) -> None:
        for proc in psutil.process_iter(["pid", "cmdline"]):
            cmd = " ".join(proc.info["cmdline"] or [])
            if not any(m in cmd for m in SERVER_MODULES):
                continue
            try:
                job = proc.environ().get("SLURM_JOB_ID")
            except psutil.Error:
                continue
            if job is not None and job in self.jobs:
                self.servers[proc.pid] = job
                self.last_seen[job] = time.time()

    def _see_jobs(self) -> None:
        out = sh("squeue", "-h", "-t", "RUNNING", "-o", "%i")
        for job_id in out.split():
            if job_id not in self.jobs and (job := job_of(job_id)) is not None:
                self.jobs[job_id] = job
            if (
                self.cancel_a_run
                and self.cancelled is None
                and job_id in self.run_jobs()
                and self._measuring_after_a_record(self.jobs[job_id])
            ):
                sh("scancel", job_id)
                self.cancelled = job_id

    def _measuring_after_a_record(self, job: Job) -> bool:
        """Another run of the job's config is recorded and this one is measuring a phase (so
        the cancel lands in the middle of a measurement, not in the record's last millisecond)."""
        done = {p.stem for p in (self.results / "runs" / job.config).glob("run_*.json")}
        log = self.results / "logs" / "runs" / job.config / f"run_{job.run}.log"
        return (
            bool(done)
            and f"run_{job.run}" not in done
            and log.exists()
            and "phase" in log.read_text(errors="replace")
        )


def run_study(workdir: Path, cancel_a_run: bool) -> tuple[subprocess.CompletedProcess, Watcher]:
    watcher = Watcher(workdir / "results" / STUDY.name, cancel_a_run)
    thread = threading.Thread(target=watcher.run, daemon=True)
    thread.start()
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile")]
    cmd += ["--directory", str(workdir), "--workflow-profile", str(ROOT / "profiles" / "slurm")]
    cmd += ["--configfile", str(STUDY_FILE)]
    env = {**os.environ, "SBATCH_PARTITION": PARTITION, "SBATCH_ACCOUNT": ACCOUNT}
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=1500)
    proc.wall_s = time.monotonic() - started  # type: ignore[attr-defined]
    time.sleep(2)  # one more look at the process table
    watcher.stop.set()
    thread.join()
    return proc, watcher


def expected_records() -> set[str]:
    return {f"runs/{c}/run_{r}.json" for c in STUDY.config_ids for r in range(1, STUDY.runs + 1)}


def record_hashes(results: Path) -> dict[str, str]:
    """Every run record under ``results``: its path there -> the SHA-256 of its bytes."""
    return {
        str(p.relative_to(results)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(results.glob("runs/*/*.json"))
    }


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("slurm_smoke")
    first, first_watch = run_study(workdir, cancel_a_run=True)
    results = workdir / "results" / STUDY.name
    after_first = record_hashes(results)
    report_after_first = (results / "technical_report.md").exists()
    second, second_watch = run_study(workdir, cancel_a_run=False)
    return {
        "workdir": workdir,
        "results": results,
        "runs": [(first, first_watch), (second, second_watch)],
        "after_first": after_first,
        "report_after_first": report_after_first,
    }


def test_the_cancel_failed_only_the_run_it_measured(study):
    """The cancel fails the invocation and the cancelled run only: every other record,
    the earlier runs of the same config included, is kept."""
    (first, watch), _ = study["runs"]
    assert watch.cancelled is not None, f"no run's job was cancelled; jobs seen: {watch.jobs}"
    assert job_end(watch.cancelled)[0] == "CANCELLED"
    assert first.returncode != 0, "a cancelled job must fail the invocation"
    victim = watch.jobs[watch.cancelled]
    assert set(study["after_first"]) == expected_records() - {victim.record}
    assert any(p.startswith(f"runs/{victim.config}/") for p in study["after_first"]), (
        "the cancel came before its config's first record"
    )
    assert not study["report_after_first"], "a report of an incomplete study"


def test_the_next_invocation_measures_only_the_missing_runs(study):
    (_, first_watch), (second, watch) = study["runs"]
    assert second.returncode == 0, second.stderr[-6000:]
    now = record_hashes(study["results"])
    before = study["after_first"]
    for path, digest in before.items():
        assert now[path] == digest, f"{path} changed in the second invocation"
    assert set(now) == expected_records()
    victim = first_watch.jobs[first_watch.cancelled]
    assert set(now) - set(before) == {victim.record}
    assert {job.record for job in watch.run_jobs().values()} == {victim.record}, watch.jobs


def test_every_run_record_came_from_its_own_slurm_job(study):
    host = socket.gethostname()
    jobs = {j: job for _, watch in study["runs"] for j, job in watch.jobs.items()}
    for path in sorted(study["results"].glob("runs/*/*.json")):
        slurm = read_record(path).environment.slurm
        assert slurm is not None, f"{path} was not measured in a Slurm job"
        assert slurm.job_id in jobs, (path, slurm.job_id, jobs)
        assert jobs[slurm.job_id].record == str(path.relative_to(study["results"])), (
            f"{path} was measured by job {slurm.job_id}, which is {jobs[slurm.job_id]}"
        )
        assert (slurm.node, slurm.partition, slurm.cluster) == (host, PARTITION, "mabench")
        assert slurm.cpus is not None and slurm.cpus >= 1
    runs = json.loads((study["results"] / "stats" / "summary.json").read_text())
    assert runs["meta"]["study"] == STUDY.name


def test_no_server_outlived_its_job(study):
    for _, watch in study["runs"]:
        assert watch.last_seen, f"no server process of jobs {watch.jobs} was ever seen"
        for job, seen in watch.last_seen.items():
            state, end = job_end(job)
            print(f"job {job} ({state}): last server seen {seen - end:+.1f} s after the job's end")
            assert seen - end <= OUTLIVE_BOUND_S, (
                f"a server of job {job} ({state}) was alive {seen - end:.0f} s after the job ended"
            )
        for pid, job in watch.servers.items():
            assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie", (
                f"server pid {pid} of job {job} is still running"
            )


def test_the_report_is_produced(study):
    report = study["results"] / "technical_report.md"
    assert report.is_file()
    assert report.read_text().startswith("# Smoke study")
    for _, watch in study["runs"]:
        for job_id, job in sorted(watch.jobs.items()):
            if job_id != watch.cancelled:
                print(
                    f"job {job_id}: {sorted(job.rules)} of {job.config}, run {job.run}: "
                    f"{job_elapsed_s(job_id)} s on the node"
                )
    walls = [round(proc.wall_s) for proc, _ in study["runs"]]  # type: ignore[attr-defined]
    print(f"wall time of the two invocations through Slurm: {walls} s")
