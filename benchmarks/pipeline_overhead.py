"""Benchmark 5 -- pipeline overhead: where a study's wall time goes, and the full study's share
of measured phases.

Runs the real pipeline (``snakemake --cores 2`` with the checkout's workflow profile) in a
temporary working directory (``--directory``), so ``results/`` of the checkout is never
touched, on a *sample of the full study*: ``config.yaml`` (the full study: same workloads,
options, corpus, servers) cut to the first config of each scenario and 2 runs per config, then
aggregate, statistics, figures and report. Its wall time is split into:

* ``measured phases``: the solo and concurrent phases of every run (Σ phase walls in the run
  records) -- the only time the study exists for;
* ``execute_run outside the phases``: the rest of ``execute_run``: server checks, forced
  unload and its verification, the loads and warm-up calls, what the servers hold after the
  loads and after the phases, metrics, environment capture (the agents' load and warm-up walls
  are reported beside it; from commit 74442ad on they overlap across servers);
* ``run job start-up/teardown``: a run job's process lifetime outside ``execute_run``
  (interpreter and imports, Snakemake's script preamble, config validation, server pool,
  writing the record; from commit 25f31c3 on: the rule script's client, and the job host's
  fork of the child that runs the step, see :mod:`mabench.jobs`);
* ``server start``: supervisor process created → server answers ``GET /`` (inside the first
  ``start_servers`` job);
* ``start_servers jobs`` and ``unload jobs`` (per config), server start excluded;
* ``analysis jobs``: aggregate, statistics, figures, report;
* ``snakemake``: time no job process was running: start-up (DAG, config validation) before
  the first job, scheduling between jobs, stopping the servers after the last job (the
  ``onsuccess`` handler: until the last server's supervisor is gone) and Snakemake's exit.

The full study (27 configs × 5 runs) is then *derived* from the sample, term by term: runs ×
(measured phases + outside per run) + configs × (start_servers + unload job) + the once-only
rest (server start, analysis jobs, Snakemake). The analysis jobs are taken as the sample's:
on 135 runs they read more records but cost about the same (mostly imports).

With ``MABENCH_BENCH_BEFORE=<another checkout>`` (e.g. a worktree of an older commit, set up
with ``make setup``), the same sample runs alternately through that checkout (its Snakefile,
profile, virtual environment and library) and this one, ABBA, so "before" and "after" are
measured by this same script on the same machine in the same session.

Job processes are found by polling Snakemake's child processes every 20 ms (``psutil``; job
start = process create time, 10 ms resolution, corrected for psutil's whole-second boot
time), servers through the pool's state file and a ``GET /`` probe; run-internal times come
from the run records (µs / ns).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
import yaml

from benchmarks.common import ROOT, WORK_DIR, Result, log
from mabench.measure.metrics import NS, union_s

TITLE = "Pipeline overhead: the full study's wall time inside vs outside measured phases"
#: the sample of the full study: the first config of each scenario, this many runs each
SAMPLE_RUNS = 2
SAMPLE_STUDY = "sample"
#: goal: measured phases' share of the full study's wall time (embedded backend)
GOAL_SHARE_PCT = 92.0
BEFORE_ENV = "MABENCH_BENCH_BEFORE"


def create_time_offset(samples: int = 5) -> float:
    """psutil's ``create_time`` minus ``time.time()`` at spawn (its boot time is whole seconds)."""
    offsets = []
    for _ in range(samples):
        t = time.time()
        p = subprocess.Popen([sys.executable, "-c", "pass"])
        with contextlib.suppress(psutil.Error):
            offsets.append(psutil.Process(p.pid).create_time() - t)
        p.wait()
    offsets.sort()
    return offsets[len(offsets) // 2] if offsets else 0.0


class Monitor:
    """Polls Snakemake's process tree (job processes) and the study's servers (readiness)."""

    def __init__(self, root_pid: int, workdir: Path, study: str, offset: float) -> None:
        self.root_pid = root_pid
        self.pool_dir = workdir / "results" / study / "servers"
        self.offset = offset
        self.jobs: dict[int, dict[str, Any]] = {}
        self.servers: dict[str, dict[str, Any]] = {}
        self.stop_flag = threading.Event()
        self.threads = [
            threading.Thread(target=self._watch_jobs, daemon=True),
            threading.Thread(target=self._watch_servers, daemon=True),
        ]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def stop(self) -> None:
        self.stop_flag.set()
        for t in self.threads:
            t.join(5)
        now = time.time()
        for job in self.jobs.values():
            if job["end"] is None:
                job["end"] = now

    def _watch_jobs(self) -> None:
        try:
            root = psutil.Process(self.root_pid)
        except psutil.Error:
            return
        while not self.stop_flag.is_set():
            now = time.time()
            try:
                children = root.children(recursive=False)
            except psutil.Error:
                break
            alive = set()
            for c in children:
                try:
                    if c.status() == psutil.STATUS_ZOMBIE:
                        continue  # exited, not reaped yet: the job is over
                except psutil.Error:
                    continue
                alive.add(c.pid)
                if c.pid in self.jobs:
                    continue
                try:
                    cmd = c.cmdline()
                    created = c.create_time() - self.offset
                except psutil.Error:
                    continue
                script = next((a for a in cmd if ".snakemake/scripts/" in a), None)
                if script is None:
                    continue
                rule = Path(script).name.split(".", 1)[1].rsplit(".py", 1)[0]
                self.jobs[c.pid] = {"rule": rule, "start": created, "end": None}
            for pid, job in self.jobs.items():
                if job["end"] is None and pid not in alive:
                    job["end"] = now
            time.sleep(0.02)

    def _watch_servers(self) -> None:
        import httpx

        while not self.stop_flag.is_set():
            listed = []
            for path in self.pool_dir.glob("pool*.json"):  # pool-<host>.json (older: pool.json)
                with contextlib.suppress(OSError, ValueError):
                    listed += json.loads(path.read_text()).get("servers", [])
            for s in listed:
                entry = self.servers.setdefault(
                    s["name"],
                    {
                        "url": s["url"],
                        "pid": s["pid"],
                        "created": s["create_time"] - self.offset,
                        "ready": None,
                        "gone": None,
                    },
                )
                if entry["ready"] is None:
                    try:
                        if httpx.get(entry["url"] + "/", timeout=0.5).status_code == 200:
                            entry["ready"] = time.time()
                    except httpx.HTTPError:
                        pass
            for entry in self.servers.values():
                if entry["ready"] is not None and entry["gone"] is None:
                    try:
                        gone = psutil.Process(entry["pid"]).status() == psutil.STATUS_ZOMBIE
                    except psutil.Error:
                        gone = True
                    if gone:
                        entry["gone"] = time.time()
            time.sleep(0.02)


def _ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def analyse(
    t_launch: float, t_exit: float, jobs: list[dict[str, Any]], servers: dict, records: list[dict]
) -> dict[str, Any]:
    wall = t_exit - t_launch
    runs = [j for j in jobs if j["rule"] == "run"]
    measured = load_warm = er_total = 0.0
    per_run = []
    for rec in records:
        phases = sum((p["t_end_ns"] - p["t_start_ns"]) / 1e9 for p in rec["phases"])
        loads = sum(x["wall_ns"] for x in rec["loads"]) / 1e9
        warm = sum(x["warmup_wall_ns"] for x in rec["loads"]) / 1e9
        total = _ts(rec["finished_at"]) - _ts(rec["started_at"])
        measured += phases
        load_warm += loads + warm
        er_total += total
        per_run.append(
            {
                "config_id": rec["config_id"],
                "run_index": rec["run_index"],
                "execute_run_s": total,
                "measured_s": phases,
                "load_s": loads,
                "warmup_s": warm,
            }
        )
    run_jobs_s = sum(j["end"] - j["start"] for j in runs)
    server_start = {
        name: (s["ready"] - s["created"]) if s.get("ready") else None for name, s in servers.items()
    }
    server_stop = {
        name: (s["gone"] - max((j["end"] for j in jobs), default=t_exit)) if s.get("gone") else None
        for name, s in servers.items()
    }
    server_s = sum(v for v in server_start.values() if v)
    unload_s = sum(j["end"] - j["start"] for j in jobs if j["rule"] == "unload")
    start_jobs_s = sum(j["end"] - j["start"] for j in jobs if j["rule"] == "start_servers")
    analysis = {
        rule: sum(j["end"] - j["start"] for j in jobs if j["rule"] == rule)
        for rule in sorted({j["rule"] for j in jobs} - {"run", "unload", "start_servers"})
    }
    origin = min((j["start"] for j in jobs), default=0.0)  # ns of epoch seconds lose precision
    covered = union_s(
        [(int((j["start"] - origin) * NS), int((j["end"] - origin) * NS)) for j in jobs]
    )
    first = min((j["start"] for j in jobs), default=t_exit)
    last = max((j["end"] for j in jobs), default=t_exit)
    out = {
        "measured phases": measured,
        # checks, forced unload, loads, warm-ups, checks after the phases, metrics; the
        # agents' load and warm-up walls are in per_run (they overlap from commit 74442ad on:
        # servers load, and agents on servers of their own warm up, at the same time)
        "execute_run outside the phases": er_total - measured,
        "run job start-up/teardown": run_jobs_s - er_total,
        "server start": server_s,
        # servers start inside the first start_servers job (before it existed: the unload job)
        "start_servers jobs (server start excluded)": start_jobs_s - server_s
        if start_jobs_s
        else 0.0,
        "unload jobs": unload_s - (0.0 if start_jobs_s else server_s),
    }
    for rule, secs in analysis.items():
        out[f"{rule} job"] = secs
    out["snakemake start-up (before the first job)"] = first - t_launch
    out["snakemake scheduling (between jobs)"] = (last - first) - covered
    gone = [s["gone"] for s in servers.values() if s.get("gone")]
    stopped = max(gone) if gone and max(gone) > last else last
    out["stopping the servers (after the last job)"] = stopped - last
    out["snakemake exit (after the servers stopped)"] = t_exit - stopped
    job_sum = sum(j["end"] - j["start"] for j in jobs)
    return {
        "wall_s": wall,
        "measured_share_pct": 100 * measured / wall if wall else None,
        "outside_share_pct": 100 * (1 - measured / wall) if wall else None,
        "breakdown_s": out,
        "breakdown_pct": {k: 100 * v / wall for k, v in out.items()},
        "jobs_overlap_s": job_sum - covered,
        "server_start_s": server_start,
        "server_gone_after_last_job_s": server_stop,
        "per_run": per_run,
        "jobs": sorted(
            (
                {
                    "rule": j["rule"],
                    "start_s": j["start"] - t_launch,
                    "wall_s": j["end"] - j["start"],
                }
                for j in jobs
            ),
            key=lambda j: j["start_s"],
        ),
    }


def sample_study(root: Path, work: Path) -> tuple[Path, dict[str, int]]:
    """The full study of ``root`` (its config.yaml) cut to the first config of each scenario
    and :data:`SAMPLE_RUNS` runs; returns the study file and the full study's size."""
    full = yaml.safe_load((root / "config.yaml").read_text())
    firsts: dict[str, dict] = {}
    for c in full["configs"]:
        firsts.setdefault(c["scenario"], c)
    sample = {**full, "study": SAMPLE_STUDY, "runs": SAMPLE_RUNS, "configs": list(firsts.values())}
    sample.pop("report", None)
    path = work / "sample.yaml"
    path.write_text(yaml.safe_dump(sample, sort_keys=False))
    size = {"configs": len(full["configs"]), "runs_per_config": int(full["runs"])}
    return path, size


def run_pipeline(root: Path, name: str) -> tuple[int, dict[str, Any], str]:
    """One sample of the full study through ``root``'s own Snakefile, profile and virtual
    environment, in a fresh working directory; returns (exit code, analysis, command)."""
    work = WORK_DIR / "pipeline" / name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    study, size = sample_study(root, work)
    bin_dir = root / ".venv" / "bin"
    cmd = [
        str(bin_dir / "snakemake"),
        "--snakefile",
        str(root / "Snakefile"),
        "--directory",
        str(work),
        "--workflow-profile",
        str(root / "profiles" / "default"),
        "--cores",
        "2",
        "--configfile",
        str(study),
    ]
    log_path = work / "snakemake.out"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}"}
    env.pop("VIRTUAL_ENV", None)
    offset = create_time_offset()
    log(f"pipeline_overhead [{name}]: {' '.join(cmd)}")
    with open(log_path, "w") as fh:
        t_launch = time.time()
        proc = subprocess.Popen(cmd, cwd=root, stdout=fh, stderr=subprocess.STDOUT, env=env)
        mon = Monitor(proc.pid, work, SAMPLE_STUDY, offset)
        mon.start()
        rc = proc.wait()
        t_exit = time.time()
        mon.stop()
    if rc != 0:
        return rc, {"error": log_path.read_text()[-3000:]}, " ".join(cmd)
    records = [
        json.loads(p.read_text())
        for p in sorted((work / "results" / SAMPLE_STUDY / "runs").glob("*/run_*.json"))
    ]
    a = analyse(t_launch, t_exit, list(mon.jobs.values()), mon.servers, records)
    a["records"] = len(records)
    a["report_written"] = (work / "results" / SAMPLE_STUDY / "technical_report.md").exists()
    a["create_time_offset_s"] = offset
    a["checkout"] = str(root)
    a["commit"] = _git_head(root)
    a["full_study"] = full_study(a, size)
    log(
        f"pipeline_overhead [{name}]: sample {a['measured_share_pct']:.1f} % measured of "
        f"{a['wall_s']:.1f} s; full study (derived) {a['full_study']['wall_min']:.1f} min, "
        f"{a['full_study']['measured_share_pct']:.1f} % measured, "
        f"{a['full_study']['outside_per_run_s']:.2f} s per run outside"
    )
    return rc, a, " ".join(cmd)


def _git_head(root: Path) -> str | None:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def full_study(a: dict[str, Any], size: dict[str, int]) -> dict[str, Any]:
    """The full study's wall time derived from one sample, term by term (see the module doc)."""
    b = a["breakdown_s"]
    runs = a["records"]
    configs = len({r["config_id"] for r in a["per_run"]})
    run_jobs = [j["wall_s"] for j in a["jobs"] if j["rule"] == "run"]
    measured = b["measured phases"] / runs
    per_run = {
        "run job start-up/teardown": b["run job start-up/teardown"] / runs,
        "execute_run outside the phases": b["execute_run outside the phases"] / runs,
    }
    agent_walls = {
        "loads": sum(r["load_s"] for r in a["per_run"]) / runs,
        "warm-ups": sum(r["warmup_s"] for r in a["per_run"]) / runs,
    }
    per_config = (b["start_servers jobs (server start excluded)"] + b["unload jobs"]) / configs
    once = a["wall_s"] - sum(run_jobs) - per_config * configs
    n_runs = size["configs"] * size["runs_per_config"]
    outside_run = sum(run_jobs) / runs - measured
    wall = n_runs * (measured + outside_run) + size["configs"] * per_config + once
    return {
        "configs": size["configs"],
        "runs": n_runs,
        "measured_per_run_s": measured,
        "outside_per_run_s": outside_run,
        "outside_per_run_breakdown_s": per_run,
        # Σ of the agents' load and warm-up walls per run, inside "execute_run outside the
        # phases"; not additive from commit 74442ad on (they overlap across servers)
        "load_and_warmup_agent_walls_s": agent_walls,
        "per_config_s": per_config,
        "once_s": once,
        "wall_s": wall,
        "wall_min": wall / 60,
        "measured_share_pct": 100 * n_runs * measured / wall,
        "derivation": (
            f"{n_runs} runs x ({measured:.2f} s measured + {outside_run:.2f} s outside) + "
            f"{size['configs']} configs x {per_config:.2f} s (start_servers + unload jobs) + "
            f"{once:.1f} s once (server start, analysis jobs, Snakemake start-up, scheduling, "
            "servers stopping, exit)"
        ),
    }


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def run(quick: bool = False) -> Result:
    res = Result("pipeline_overhead", TITLE)
    from benchmarks.server_overhead import server_available

    why = server_available()
    if why:
        return res.skipped(f"embedded server not available: {why}")
    before = os.environ.get(BEFORE_ENV)
    checkouts = {"after": ROOT}
    if before:
        checkouts["before"] = Path(before).resolve()
    order = (
        ["after"]
        if quick
        else (["before", "after", "after", "before"] if before else ["after", "after"])
    )
    samples: dict[str, list[dict[str, Any]]] = {k: [] for k in checkouts}
    for i, which in enumerate(order):
        rc, a, cmd = run_pipeline(checkouts[which], f"{which}-{i}")
        if rc != 0:
            res.status = "error"
            res.notes.append(f"{which} ({cmd}): snakemake exited {rc}: {a.get('error')}")
            return res
        samples[which].append(a)
    summarise(res, order, samples)
    return res


def summarise(res: Result, order: list[str], samples: dict[str, list[dict[str, Any]]]) -> None:
    """The goal and notes of the samples (each checkout's median of its samples)."""
    res.details["order"] = order
    res.details["samples"] = samples
    summary_by = {}
    for which, runs in samples.items():
        fs = [a["full_study"] for a in runs]
        summary_by[which] = {
            "commit": runs[0]["commit"],
            "full_study_wall_min": _median([f["wall_min"] for f in fs]),
            "full_study_measured_share_pct": _median([f["measured_share_pct"] for f in fs]),
            "outside_per_run_s": _median([f["outside_per_run_s"] for f in fs]),
            "measured_per_run_s": _median([f["measured_per_run_s"] for f in fs]),
            "per_config_s": _median([f["per_config_s"] for f in fs]),
            "once_s": _median([f["once_s"] for f in fs]),
            "outside_per_run_breakdown_s": {
                k: _median([f["outside_per_run_breakdown_s"][k] for f in fs])
                for k in fs[0]["outside_per_run_breakdown_s"]
            },
            "load_and_warmup_agent_walls_s": {
                k: _median([f["load_and_warmup_agent_walls_s"][k] for f in fs])
                for k in fs[0]["load_and_warmup_agent_walls_s"]
            },
            "sample_measured_share_pct": _median([a["measured_share_pct"] for a in runs]),
            "samples": len(runs),
        }
    res.details["summary"] = summary_by
    after = summary_by["after"]
    how = "; ".join(
        f"{which} ({(sm['commit'] or '')[:7]}): full study {sm['full_study_wall_min']:.1f} min, "
        f"{sm['full_study_measured_share_pct']:.1f} % measured"
        for which, sm in sorted(summary_by.items(), key=lambda kv: kv[0] != "before")
    )
    how += (
        f" (median of {after['samples']}; derived from samples of the full study, "
        f"{SAMPLE_RUNS} runs of the first config of each scenario: runs x (measured + outside "
        "per run) + configs x (start_servers + unload jobs) + once)"
    )
    res.goal(
        "measured phases, share of the full study's wall time (embedded backend)",
        after["full_study_measured_share_pct"],
        ">=",
        GOAL_SHARE_PCT,
        "%",
        how,
    )
    for which, sm in summary_by.items():
        res.notes.append(
            f"{which} ({(sm['commit'] or '')[:8]}): full study {sm['full_study_wall_min']:.1f} min, "
            f"{sm['full_study_measured_share_pct']:.1f} % measured; outside per run "
            f"{sm['outside_per_run_s']:.2f} s ("
            + ", ".join(f"{k} {v:.2f}" for k, v in sm["outside_per_run_breakdown_s"].items())
            + f"); per config {sm['per_config_s']:.2f} s; once {sm['once_s']:.1f} s "
            f"(median of {sm['samples']})"
        )
