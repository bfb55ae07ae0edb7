"""Benchmark 8 -- memory: an embedded server's resident memory while it serves N agents, and
the peak memory of one run job.

One ``python -m mabench.servers.embedded`` (1 llama.cpp thread, SmolLM2), its model loaded,
then rounds of N concurrent streamed ``/api/generate`` calls (N = 2 and 16; the server queues
them, as it does when N agents share it), many rounds in a row. After every round the server's
RSS is read (``psutil``), and at the end its peak RSS (``VmHWM`` of ``/proc/<pid>/status``).

Goals, derived from what the server holds: the model's weights (mmapped) and one context (KV
cache, compute buffers) are allocated at load; a request adds only its prompt, its tokens and
its answer, freed when it ends. So the server must not grow with the requests it served:
RSS over the last third of the rounds minus over the first third ≤ 10 MB (about 3 % of its
RSS, well above allocator noise), at N = 2 and at N = 16.

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
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psutil
import yaml

from benchmarks.common import ROOT, WORK_DIR, Result, log
from mabench.servers.net import free_port
from mabench.servers.simulated import SimServerProcess

TITLE = "Memory: an embedded server's RSS while it serves N agents"
FULL = {"ns": [2, 16], "requests": 240, "num_predict": 8}
QUICK = {"ns": [2], "requests": 12, "num_predict": 4}
GROWTH_GOAL_MB = 10.0
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


def serve_rounds(n: int, p: dict[str, Any]) -> dict[str, Any]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "mabench.servers.embedded", "--port", str(port)]
    proc = subprocess.Popen([*cmd, "--num-thread", "1"], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("embedded server did not start")
            time.sleep(0.1)
        httpx.post(url + "/api/generate", json={"model": MODEL, "keep_alive": -1}, timeout=60)
        server = psutil.Process(proc.pid)
        loaded_mb = server.memory_info().rss / 2**20
        rss = []
        rounds = max(3, p["requests"] // n)
        with ThreadPoolExecutor(max_workers=n) as pool:
            for r in range(rounds):
                list(pool.map(lambda i: _call(url, i, p["num_predict"]), range(r * n, r * n + n)))
                rss.append(server.memory_info().rss / 2**20)
        third = max(1, rounds // 3)
        growth = statistics.median(rss[-third:]) - statistics.median(rss[:third])
        out = {
            "n": n,
            "rounds": rounds,
            "requests": rounds * n,
            "rss_after_load_mb": loaded_mb,
            "rss_after_rounds_mb": rss,
            "peak_rss_mb": _peak_mb(proc.pid),
            "growth_mb": growth,
        }
        log(
            f"memory N={n}: {rounds * n} requests, RSS after load {loaded_mb:.0f} MB, peak "
            f"{out['peak_rss_mb']:.0f} MB, growth last third - first third {growth:+.1f} MB"
        )
        return out
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


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
        res.goal(
            f"embedded server RSS growth with requests served, N={row['n']}",
            row["growth_mb"],
            "<=",
            GROWTH_GOAL_MB,
            "MB",
            f"median RSS of the last third of {row['rounds']} rounds minus the first third "
            f"({row['requests']} requests); peak RSS {row['peak_rss_mb']:.0f} MB, "
            f"{row['rss_after_load_mb']:.0f} MB after load",
        )
    return res
