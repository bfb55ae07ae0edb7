"""The smoke study on a real Slurm cluster through `--workflow-profile profiles/slurm`.

One invocation measures the study while a watcher follows the cluster: it cancels (scancel)
the job of the second config once that job has recorded one run and is measuring the next,
and notes every server process with the Slurm job it belongs to. Then:

- every run record came from a Slurm job of this test, on this node, in the test partition;
- no server outlived its job (not the completed one, not the cancelled one);
- the cancel failed only that job's runs: the other config's records are complete after the
  first invocation, and byte-identical after the next one, which measures exactly the missing
  runs and produces the report.
"""

from __future__ import annotations

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


def job_config(job_id: str) -> str | None:
    """The config a measurement job measures (its batch script names the target jobs)."""
    script = sh("scontrol", "write", "batch_script", job_id, "-")
    found = set(re.findall(r"config=([A-Za-z0-9_.-]+)", script))
    return found.pop() if len(found) == 1 else None


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


@dataclass
class Watcher:
    """Follows the cluster while Snakemake runs: cancels the second config's job after its
    first record, and notes when each server process of each Slurm job was last seen."""

    results: Path
    cancel_second: bool
    jobs: dict[str, str] = field(default_factory=dict)  # Slurm job id -> config
    order: list[str] = field(default_factory=list)  # configs in the order their jobs started
    cancelled: str | None = None
    last_seen: dict[str, float] = field(default_factory=dict)  # job id -> time
    servers: dict[int, str] = field(default_factory=dict)  # server pid -> job id
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            self._see_servers()
            self._see_jobs()
            time.sleep(0.5)

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
        for job in out.split():
            if job not in self.jobs and (config := job_config(job)) is not None:
                self.jobs[job] = config
                self.order.append(config)
        if self.cancel_second and self.cancelled is None and len(self.order) == 2:
            victim = self.order[1]
            if self._measuring_after_a_record(victim):
                job = next(j for j, c in self.jobs.items() if c == victim)
                sh("scancel", job)
                self.cancelled = job

    def _measuring_after_a_record(self, config: str) -> bool:
        """One run of ``config`` is recorded and another one is measuring a phase (so the
        cancel lands in the middle of a measurement, not in the record's last millisecond)."""
        runs = self.results / "runs" / config
        logs = self.results / "logs" / "runs" / config
        done = {p.stem for p in runs.glob("run_*.json")}
        return bool(done) and any(
            log.stem not in done and "phase" in log.read_text(errors="replace")
            for log in logs.glob("run_*.log")
        )


def run_study(workdir: Path, cancel_second: bool) -> tuple[subprocess.CompletedProcess, Watcher]:
    watcher = Watcher(workdir / "results" / STUDY.name, cancel_second)
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


def records(results: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(results)): p.read_bytes() for p in sorted(results.glob("runs/*/*.json"))
    }


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("slurm_smoke")
    first, first_watch = run_study(workdir, cancel_second=True)
    results = workdir / "results" / STUDY.name
    after_first = records(results)
    report_after_first = (results / "technical_report.md").exists()
    second, second_watch = run_study(workdir, cancel_second=False)
    return {
        "workdir": workdir,
        "results": results,
        "runs": [(first, first_watch), (second, second_watch)],
        "after_first": after_first,
        "report_after_first": report_after_first,
    }


def test_the_cancelled_job_failed_only_its_runs(study):
    """The cancel fails the invocation and the cancelled job's config only: the other config
    is complete. (Snakemake removes every output of a failed group job, so the run that job
    had finished goes too and is measured again; see docs/cluster.md.)"""
    (first, watch), _ = study["runs"]
    assert watch.cancelled is not None, f"no job was cancelled; jobs seen: {watch.jobs}"
    assert job_end(watch.cancelled)[0] == "CANCELLED"
    assert first.returncode != 0, "a cancelled job must fail the invocation"
    victim = watch.jobs[watch.cancelled]
    survivor = next(c for c in STUDY.config_ids if c != victim)
    assert {f"runs/{survivor}/run_{r}.json" for r in range(1, STUDY.runs + 1)} <= set(
        study["after_first"]
    )
    victim_runs = {p for p in expected_records() if p.startswith(f"runs/{victim}/")}
    assert not victim_runs <= set(study["after_first"]), "the cancel came after the job's last run"
    assert not study["report_after_first"], "a report of an incomplete study"


def test_the_next_invocation_measures_only_the_missing_runs(study):
    _, (second, watch) = study["runs"]
    assert second.returncode == 0, second.stderr[-6000:]
    now = records(study["results"])
    before = study["after_first"]
    for path, data in before.items():
        assert now[path] == data, f"{path} changed in the second invocation"
    assert set(now) == expected_records()
    new_jobs = {
        read_record(study["results"] / p).environment.slurm.job_id for p in set(now) - set(before)
    }
    assert new_jobs <= set(watch.jobs), (new_jobs, watch.jobs)
    assert set(watch.jobs.values()) == {Path(p).parent.name for p in set(now) - set(before)}


def test_every_run_record_came_from_a_slurm_job(study):
    host = socket.gethostname()
    jobs = {j for _, watch in study["runs"] for j in watch.jobs}
    for path in sorted(study["results"].glob("runs/*/*.json")):
        slurm = read_record(path).environment.slurm
        assert slurm is not None, f"{path} was not measured in a Slurm job"
        assert slurm.job_id in jobs, (path, slurm.job_id, jobs)
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
        print(f"jobs {watch.jobs}")
    walls = [round(proc.wall_s) for proc, _ in study["runs"]]  # type: ignore[attr-defined]
    print(f"wall time of the two invocations through Slurm: {walls} s")
