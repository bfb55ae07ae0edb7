"""Benchmark 5 -- pipeline overhead: where the smoke study's wall time goes.

Runs the real pipeline (``snakemake --cores 2`` with the project's workflow profile and
``workflow/studies/smoke.yaml``: embedded servers, 2 configs x 2 runs, aggregate, statistics,
figures, report) in a temporary working directory (``--directory``), so ``results/`` of the
checkout is never touched, and splits its wall time into:

* ``measured phases``: the solo and concurrent phases of every run (Σ phase walls in the run
  records) -- the only time the study exists for;
* ``load + warm-up``: model loads and the unmeasured warm-up call of each run (records);
* ``execute_run other``: the rest of ``execute_run`` (server checks, forced unload and its
  verification, HTTP client set-up between phases, metrics, environment capture);
* ``run job start-up/teardown``: a run job's process lifetime outside ``execute_run``
  (interpreter and imports, Snakemake's script preamble, config validation, server pool,
  writing the record);
* ``server start``: supervisor process created → server answers ``GET /``;
* ``unload jobs``: the per-config forced-unload jobs, server start excluded;
* ``analysis jobs``: aggregate, statistics, figures, report;
* ``snakemake``: time no job process was running: start-up (DAG, config validation) before
  the first job, scheduling between jobs, stopping the servers after the last job (the
  ``onsuccess`` handler: until the last server's supervisor is gone) and Snakemake's exit.

Job processes are found by polling Snakemake's child processes every 20 ms (``psutil``; job
start = process create time, 10 ms resolution, corrected for psutil's whole-second boot time), servers through the pool's state file and a
``GET /`` probe; run-internal times come from the run records (µs / ns).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil

from benchmarks.common import ROOT, WORK_DIR, Result, log

TITLE = "Pipeline overhead: the smoke study's wall time inside vs outside measured phases"
STUDY = ROOT / "workflow" / "studies" / "smoke.yaml"
PROFILE = ROOT / "profiles" / "default"


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
        self.pool_state = workdir / "results" / study / "servers" / "pool.json"
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
            try:
                state = json.loads(self.pool_state.read_text())
            except (OSError, ValueError):
                state = {}
            for s in state.get("servers", []):
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


def _union(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, None
    for a, b in sorted(intervals):
        if end is None or a > end:
            total += b - a
            end = b
        elif b > end:
            total += b - end
            end = b
    return total


def analyse(
    t_launch: float, t_exit: float, jobs: list[dict[str, Any]], servers: dict, records: list[dict]
) -> dict[str, Any]:
    wall = t_exit - t_launch
    runs = [j for j in jobs if j["rule"] == "run"]
    measured = load_warm = er_other = 0.0
    er_total = 0.0
    per_run = []
    for rec in records:
        phases = sum((p["t_end_ns"] - p["t_start_ns"]) / 1e9 for p in rec["phases"])
        loads = sum(x["wall_ns"] for x in rec["loads"]) / 1e9
        warm = sum(x["warmup_wall_ns"] for x in rec["loads"]) / 1e9
        total = _ts(rec["finished_at"]) - _ts(rec["started_at"])
        measured += phases
        load_warm += loads + warm
        er_other += total - phases - loads - warm
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
    analysis = {
        rule: sum(j["end"] - j["start"] for j in jobs if j["rule"] == rule)
        for rule in sorted({j["rule"] for j in jobs} - {"run", "unload"})
    }
    covered = _union([(j["start"], j["end"]) for j in jobs])
    first = min((j["start"] for j in jobs), default=t_exit)
    last = max((j["end"] for j in jobs), default=t_exit)
    out = {
        "measured phases": measured,
        "load + warm-up": load_warm,
        "execute_run other": er_other,
        "run job start-up/teardown": run_jobs_s - er_total,
        "server start": server_s,
        "unload jobs (server start excluded)": unload_s - server_s,
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


def run_pipeline(extra: list[str], quick: bool, name: str) -> tuple[int, dict[str, Any], str]:
    """One smoke study in a fresh working directory; returns (exit code, analysis, command)."""
    work = WORK_DIR / "pipeline" / name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    snakemake = Path(sys.executable).parent / "snakemake"
    cmd = [
        str(snakemake),
        "--snakefile",
        str(ROOT / "Snakefile"),
        "--directory",
        str(work),
        "--workflow-profile",
        str(PROFILE),
        "--cores",
        "2",
        "--configfile",
        str(STUDY),
        *extra,
    ]
    if quick:
        cmd += ["--config", "runs=1"]
    log_path = work / "snakemake.out"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    offset = create_time_offset()
    log(f"pipeline_overhead [{name}]: {' '.join(cmd)}")
    with open(log_path, "w") as fh:
        t_launch = time.time()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, env=env)
        mon = Monitor(proc.pid, work, "smoke", offset)
        mon.start()
        rc = proc.wait()
        t_exit = time.time()
        mon.stop()
    if rc != 0:
        return rc, {"error": log_path.read_text()[-3000:]}, " ".join(cmd)
    records = [
        json.loads(p.read_text())
        for p in sorted((work / "results" / "smoke" / "runs").glob("*/run_*.json"))
    ]
    a = analyse(t_launch, t_exit, list(mon.jobs.values()), mon.servers, records)
    a["records"] = len(records)
    a["report_written"] = (work / "results" / "smoke" / "technical_report.md").exists()
    a["create_time_offset_s"] = offset
    top = sorted(a["breakdown_s"].items(), key=lambda kv: -kv[1])
    log(
        f"pipeline_overhead [{name}]: measured phases {a['measured_share_pct']:.1f} % of "
        f"{a['wall_s']:.1f} s; largest: " + ", ".join(f"{k} {v:.1f} s" for k, v in top[:5])
    )
    return rc, a, " ".join(cmd)


def run(quick: bool = False) -> Result:
    res = Result("pipeline_overhead", TITLE)
    from benchmarks.server_overhead import server_available

    why = server_available()
    if why:
        return res.skipped(f"embedded server not available: {why}")
    rc, a, cmd = run_pipeline([], quick, "as-configured")
    res.details["command"] = cmd
    res.details["exit_code"] = rc
    if rc != 0:
        res.status = "error"
        res.notes.append(f"snakemake exited {rc}: {a.get('error')}")
        return res
    res.details.update(a)
    res.notes.append(
        f"measured phases: {a['measured_share_pct']:.1f} % of {a['wall_s']:.1f} s wall; "
        f"outside: {a['outside_share_pct']:.1f} %"
    )
    top = sorted(a["breakdown_s"].items(), key=lambda kv: -kv[1])
    res.notes.append(
        "largest: "
        + ", ".join(f"{k} {v:.1f} s ({100 * v / a['wall_s']:.0f} %)" for k, v in top[:6])
    )
    # no numeric goal in the issue: the share is reported (status "measured")
    return res
