"""Benchmark 8 -- memory: an embedded server's resident memory while it serves N agents, and
the peak memory of one run job.

One ``python -m mabench.servers.embedded`` (1 llama.cpp thread, SmolLM2), its model loaded,
then rounds of N concurrent streamed ``/api/generate`` calls (N = 2 and 16; the server queues
them, as it does when N agents share it), many rounds in a row: a warm-up of 160 requests,
then 640 more. After every round the server's RSS is read (``psutil``), and at the end its
peak RSS (``VmHWM`` of ``/proc/<pid>/status``).

Goal, derived from what the server holds: the model's weights (mmapped) and one context (KV
cache, compute buffers) are allocated at load; the first requests fill what is sized once
(the allocator's heaps at their working size, Python's and the template's caches: measured,
the last step of RSS came at request 50 at N = 2, 112 at N = 16); a request adds only its prompt, its tokens, its
sampler and its answer, freed when it ends. So after the warm-up the server must not grow with
the requests it served: median RSS of the last third of the rounds after the warm-up minus
that of the first third ≤ 2 MB, at N = 2 and at N = 16. The thirds' middles are 427 requests
apart, so a request that kept anything it holds (its scope and answer, a few KB; its sampler,
0.6 MB) would exceed it, while the allocator's steps (under 1 MB each) stay under it. A plateau
passes, a leak does not; the least-squares slope over the same rounds (MB per 1000 requests)
is reported beside it. The statistic the goal used before (≤ 10 MB, the same thirds over the
first 240 requests after load, warm-up included) stays in the details.

A run job (``mabench run``: what the ``run`` rule's script does, less Snakemake's preamble)
measures one run of the full study's first config (``config.yaml``: 2 agents, its workloads)
on two simulated servers, so the number is the harness's own, not a model's. Its peak RSS is
exact: ``ru_maxrss`` of the job's process from ``wait4`` (it starts no children). Goal: the
harness must not compete with the servers it measures for memory, so at most a quarter of
one embedded server's RSS after load (262 MB): 64 MB.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psutil
import yaml

from benchmarks.common import ROOT, WORK_DIR, Result, log
from mabench.servers.embedded.launch import ServerProcess
from mabench.servers.simulated import SimServerProcess

TITLE = "Memory: an embedded server's RSS while it serves N agents"
FULL = {"ns": [2, 16], "warmup": 160, "requests": 640, "num_predict": 8}
QUICK = {"ns": [2], "warmup": 4, "requests": 12, "num_predict": 4}
GROWTH_GOAL_MB = 2.0
#: the window and bound of the goal before the warm-up (kept in the details for continuity)
FIRST_WINDOW_REQUESTS = 240
FIRST_WINDOW_GOAL_MB = 10.0
RUN_JOB_GOAL_MB = 64.0
MODEL = "smollm2:135m"


def _peak_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _call(url: str, i: int, num_predict: int) -> int:
    body = {
        "model": MODEL,
        "prompt": f"Write one sentence about benchmark number {i}.",
        "options": {"num_predict": num_predict, "seed": i},
    }
    chunks = 0
    with httpx.stream("POST", f"{url}/api/generate", json=body, timeout=120) as r:
        for _ in r.iter_lines():
            chunks += 1
    return chunks


def _growth(rss: list[float]) -> float:
    """Median RSS of the last third of the rounds minus that of the first third."""
    third = max(1, len(rss) // 3)
    return statistics.median(rss[-third:]) - statistics.median(rss[:third])


def _slope_per_1000(served: list[int], rss: list[float]) -> float:
    """Least-squares RSS growth per 1000 requests served (MB)."""
    return statistics.linear_regression(served, rss).slope * 1000


def _start_server() -> ServerProcess:
    """The embedded server (one llama.cpp thread), answering, with the model loaded."""
    args = ["--num-thread", "1"]
    server = ServerProcess(args=args, log_path=WORK_DIR / "logs" / "memory-server.log")
    server.start()
    try:
        server.wait_ready(timeout=60)
        body = {"model": MODEL, "keep_alive": -1}
        httpx.post(server.url + "/api/generate", json=body, timeout=60)
    except BaseException:
        server.stop(timeout=10)
        raise
    return server


def _summary(n: int, p: dict[str, Any], served: list[int], rss: list[float]) -> dict[str, Any]:
    """The goal's statistic over the rounds after the warm-up, and the old one (the first
    FIRST_WINDOW_REQUESTS requests after load)."""
    steady = [i for i, s in enumerate(served) if s > p["warmup"]]
    first = [i for i, s in enumerate(served) if s <= FIRST_WINDOW_REQUESTS]
    steady_rss = [rss[i] for i in steady]
    return {
        "n": n,
        "rounds": len(rss),
        "requests": served[-1],
        "warmup_requests": p["warmup"],
        "steady_rounds": len(steady),
        "steady_requests": served[-1] - served[steady[0]] + n,
        "growth_mb": _growth(steady_rss),
        "slope_mb_per_1000": _slope_per_1000([served[i] for i in steady], steady_rss),
        "steady_min_mb": min(steady_rss),
        "steady_max_mb": max(steady_rss),
        "first_window_requests": served[first[-1]] if first else 0,
        "first_window_growth_mb": _growth([rss[i] for i in first]) if first else None,
        "whole_run_growth_mb": _growth(rss),
    }


def serve_rounds(n: int, p: dict[str, Any]) -> dict[str, Any]:
    embedded = _start_server()
    url = embedded.url
    try:
        server = psutil.Process(embedded.pid)
        loaded_mb = server.memory_info().rss / 2**20
        rss: list[float] = []
        served: list[int] = []
        rounds = max(6, -(-(p["warmup"] + p["requests"]) // n))
        with ThreadPoolExecutor(max_workers=n) as pool:
            for r in range(rounds):
                list(pool.map(lambda i: _call(url, i, p["num_predict"]), range(r * n, r * n + n)))
                rss.append(server.memory_info().rss / 2**20)
                served.append(r * n + n)
        out = {
            **_summary(n, p, served, rss),
            "rss_after_load_mb": loaded_mb,
            "rss_after_rounds_mb": rss,
            "peak_rss_mb": _peak_mb(embedded.pid),
        }
        log(
            f"memory N={n}: {out['requests']} requests, RSS after load {loaded_mb:.0f} MB, "
            f"peak {out['peak_rss_mb']:.0f} MB; after the warm-up: growth last third - first "
            f"third {out['growth_mb']:+.2f} MB, slope {out['slope_mb_per_1000']:+.2f} MB per "
            f"1000 requests; first {out['first_window_requests']} requests: "
            f"{out['first_window_growth_mb']:+.1f} MB"
        )
        return out
    finally:
        embedded.stop(timeout=10)


def _study_on(urls: list[str]) -> dict[str, Any]:
    """The full study's first config, its servers replaced by ``urls`` (external backend)."""
    study = yaml.safe_load((ROOT / "config.yaml").read_text())
    study["backend"] = {"kind": "external"}
    study["servers"] = [
        {"name": s["name"], "url": u} for s, u in zip(study["servers"], urls, strict=True)
    ]
    study["configs"] = study["configs"][:1]
    return study


def run_job_peak() -> dict[str, Any]:
    """One run job of the full study's first config on simulated servers; its exact peak RSS."""
    study = yaml.safe_load((ROOT / "config.yaml").read_text())
    sims = [
        SimServerProcess(
            WORK_DIR / "logs", ttft_ms=50.0, token_ms=5.0, mode="parallel", model=[study["model"]]
        )
        for _ in study["servers"]
    ]
    try:
        for sim in sims:
            sim.wait_ready()
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "study.yaml"
            path.write_text(yaml.safe_dump(_study_on([sim.url for sim in sims])))
            config_id = study["configs"][0]["id"]
            args = ["--config", str(path), "--config-id", config_id, "--run", "1"]
            out = Path(tmp) / "run.json"
            proc = subprocess.Popen(
                [sys.executable, "-m", "mabench", "run", *args, "--out", str(out)],
                cwd=tmp,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            _, status, usage = os.wait4(proc.pid, 0)
            if os.waitstatus_to_exitcode(status) != 0 or not out.exists():
                raise RuntimeError(f"the run job failed: {proc.stderr.read().decode()[-2000:]}")
            proc.stderr.close()
    finally:
        for sim in sims:
            sim.stop()
    peak = usage.ru_maxrss / 1024
    log(f"memory: one run job ({config_id}, 2 agents, simulated servers): peak RSS {peak:.1f} MB")
    return {"config_id": config_id, "peak_rss_mb": peak}


def run(quick: bool = False) -> Result:
    p = dict(QUICK if quick else FULL)
    res = Result("memory", TITLE)
    res.details["parameters"] = p
    job = run_job_peak()
    res.details["run_job"] = job
    res.goal(
        "peak RSS of one run job (the full study's first config, 2 agents)",
        job["peak_rss_mb"],
        "<=",
        RUN_JOB_GOAL_MB,
        "MB",
        "ru_maxrss of `mabench run` from wait4, on simulated servers",
    )
    rows = [serve_rounds(n, p) for n in p["ns"]]
    res.details["servers"] = rows
    for row in rows:
        old = row["first_window_growth_mb"]
        res.goal(
            f"embedded server RSS growth with requests served after a warm-up, N={row['n']}",
            row["growth_mb"],
            "<=",
            GROWTH_GOAL_MB,
            "MB",
            f"median RSS of the last third of {row['steady_rounds']} rounds "
            f"({row['steady_requests']} requests, after {row['warmup_requests']}) minus the "
            f"first third; slope {row['slope_mb_per_1000']:+.2f} MB per 1000 requests; "
            f"first {row['first_window_requests']} requests from load, warm-up included "
            f"(the goal before, ≤ {FIRST_WINDOW_GOAL_MB:.0f} MB): "
            + (f"{old:+.1f} MB" if old is not None else "n/a")
            + f"; peak RSS {row['peak_rss_mb']:.0f} MB, {row['rss_after_load_mb']:.0f} MB "
            "after load",
        )
    return res
