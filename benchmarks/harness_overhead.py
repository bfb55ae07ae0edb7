"""Benchmark 1 -- harness overhead: true efficiency of N agents on perfectly parallel servers.

Every agent has its own server; the servers never slow each other down and their timing is
known exactly (``ttft`` to the first token, then one token every ``token`` ms). A perfect
harness therefore measures a concurrent phase exactly as long as one agent alone, and a true
efficiency (Σ solo agent walls / (N × concurrent wall)) of exactly 100 %. Whatever is missing
is the harness measuring itself.

The measurement is the product's code path: ``mabench.measure.protocol.execute_run`` (check, forced
unload, load, warm-up, solo and concurrent phase, metrics) with the study's coordinator, for
N = 1, 2, 4, 8, 16 agents, both coordinators, several runs (coordinator order alternates per
run; phase order alternates per run index as the protocol prescribes).

Servers ("ideal servers"): all N ports are served by one lean process
(:mod:`benchmarks.idealserver`) that costs a few µs of CPU per token, writes the first token
exactly ``ttft`` after the request's last byte arrived, and uses µs-resolution timers. The
product's ``mabench sim-serve`` costs ~0.5 ms of CPU per token and N of them are N Python
processes, which on a 2-core machine compete with the harness for the CPUs: at N = 16 that
measures the simulated servers as much as the harness. The same runs against sim-serve
processes are reported alongside (``sim_comparison``) so the difference is visible.

Per run it reports:

* ``true_efficiency`` (%), the goal metric;
* ``coordination_overhead_ms`` = concurrent wall − longest agent span (RunMetrics);
* ``wall_minus_ideal_ms`` = concurrent wall − the analytic ideal A (= calls × (ttft +
  (num_predict − 1) × token));
* ``wall_minus_solo_ms`` = concurrent wall − Σ solo walls / N: the efficiency loss in ms
  (true efficiency = 100 × (1 − this / wall));
* TTFT error of the concurrent calls, and CPU seconds used by the harness and the servers.

The OpenAI path: the same runs with every server measured through the OpenAI API
(``api: openai``: streamed ``/v1/chat/completions``, Server-Sent Events over the same timed
transport), against the same ideal servers, which speak it on the same exact timing; same
goals (``details.openai``, goals named "OpenAI API").

The peers (``details.peers``, :mod:`benchmarks.peers`): the same agents, in the same run, on
the same ideal servers, streamed by the clients the field uses (aiohttp, httpx async and sync,
the official ``ollama`` AsyncClient with ``asyncio.gather``) beside ours (both coordinators):
warm-up, solo phase, concurrent phase, true efficiency from the same formula, for N = 2, 16
and 64; the clients' order rotates and reverses from run to run (A/B alternation). The peers'
workload is shorter than the main sweep's (fewer tokens per call, same token rate), so that
the solo phase of 64 agents fits: efficiency losses are relative to it, the ms are not.

Before and after: the first full run (commit 976db66) measured the harness when it streamed
through httpx with new clients per phase; that result file is kept in
``benchmarks/results/before/`` and compared in ``benchmarks/README.md``.
"""

from __future__ import annotations

import os
import time
from typing import Any

import psutil

from benchmarks import peers
from benchmarks.common import Result, log, servers, summary

TITLE = "Harness overhead: true efficiency on ideal parallel servers"

FULL = {
    "ns": [1, 2, 4, 8, 16],
    # runs per N: a run of N agents costs ~(N + 1) x 2.15 s; the small-N goals are the tight
    # ones (0.2 % = 4 ms of a 2.15 s phase, about the run-to-run noise), so they get more runs.
    "runs": {1: 5, 2: 9, 4: 5, 8: 3, 16: 5},
    "ttft_ms": 100.0,
    "token_ms": 25.0,
    "num_predict": 40,
    "calls": 2,
    # sim-serve processes: N = 16 of them cost ~1.5 min and were measured in the first rounds
    "sim_ns": [2],
    "sim_runs": {2: 1},
    # the OpenAI path, on the ideal servers
    "openai_ns": [2, 16],
    "openai_runs": {2: 3, 16: 2},
    # the peers beside ours: 6 clients x (N + 1) x the peer workload's A (0.45 s) per run
    "peer_ns": [2, 16, 64],
    "peer_runs": {2: 4, 16: 3, 64: 2},
    "peer_num_predict": 6,
}
QUICK = {
    "ns": [1, 2, 4],
    "runs": {1: 1, 2: 1, 4: 1},
    # A = 0.4 s: long enough that a busy machine's hiccup of a few tens of ms stays a few %
    "ttft_ms": 100.0,
    "token_ms": 10.0,
    "num_predict": 11,
    "calls": 2,
    "sim_ns": [2],
    "sim_runs": {2: 1},
    "openai_ns": [2],
    "openai_runs": {2: 1},
    "peer_ns": [2],
    # three runs: the clients' order rotates and reverses from run to run (peers.order_of_run)
    "peer_runs": {2: 3},
    "peer_num_predict": 4,
}
PROMPTS = ["collector_analyse.md.j2", "collector_report.md.j2", "insight_insights.md.j2"]
GOALS = {2: 99.8, 16: 99.5}  # true efficiency (%) at N agents
OVERHEAD_GOAL_MS = 2.0  # coordination overhead per run at N = 2


def make_study(urls: dict[str, str], coordinator: str, p: dict[str, Any]):
    from mabench.config import study_from_dict

    calls = [
        {"prompt": PROMPTS[i % len(PROMPTS)], "num_predict": p["num_predict"]}
        for i in range(p["calls"])
    ]
    return study_from_dict(
        {
            "study": "bench-harness-overhead",
            "runs": max(p["runs"].values()),
            "coordinator": coordinator,
            "phase_order": "alternate",
            "backend": {"kind": "external"},
            # simulated servers: each a process whose timing the others do not change, so an
            # agent alone on its server is the agent alone on the machine
            "baseline": "solo",
            "servers": [
                {"name": n, "url": u, "api": p.get("api", "ollama")} for n, u in urls.items()
            ],
            "workloads": {"w": {"calls": calls}},
            "agents": [
                {"name": f"agent{i:02d}", "workload": "w", "server": name}
                for i, name in enumerate(urls)
            ],
            "configs": [{"id": "c1", "scenario": "chimera_homo"}],
        }
    )


def ideal_agent_s(p: dict[str, Any]) -> float:
    """One agent alone on an ideal server: calls × (ttft + (num_predict − 1) × token)."""
    return p["calls"] * (p["ttft_ms"] + (p["num_predict"] - 1) * p["token_ms"]) / 1000


def _cpu(procs: list[psutil.Process]) -> float:
    total = 0.0
    for pr in procs:
        try:
            t = pr.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def _row(metrics, calls, n: int, a_s: float, p: dict[str, Any]) -> dict[str, Any]:
    conc_ttft = [
        c.client_ttft_ns / 1e6 - p["ttft_ms"]
        for c in calls
        if c.phase == "concurrent" and c.client_ttft_ns is not None
    ]
    solo_mean = metrics.solo_sum_s / n
    return {
        "true_efficiency": metrics.true_efficiency,
        "seed_efficiency": metrics.seed_efficiency,
        "coordination_overhead_ms": metrics.coordination_overhead_ms,
        "wall_minus_ideal_ms": (metrics.concurrent_wall_s - a_s) * 1e3,
        "wall_minus_solo_ms": (metrics.concurrent_wall_s - solo_mean) * 1e3,
        "solo_minus_ideal_ms": (solo_mean - a_s) * 1e3,
        "concurrent_ttft_error_ms_median": summary(conc_ttft)["median"] if conc_ttft else None,
        "concurrent_ttft_error_ms_max": max(conc_ttft) if conc_ttft else None,
    }


def run_execute(fleet, n: int, coordinator: str, run_index: int, p: dict[str, Any]) -> dict:
    """One execute_run of N agents; returns the per-run row."""
    from mabench.measure.protocol import execute_run

    urls = {f"s{i:02d}": u for i, u in enumerate(fleet.urls[:n])}
    study = make_study(urls, coordinator, p)
    server_procs = [psutil.Process(pid) for pid in fleet.pids]
    me = psutil.Process()
    s0, c0, w0 = _cpu(server_procs), _cpu([me]), time.perf_counter()
    record = execute_run(study, "c1", run_index, urls)
    s1, c1, w1 = _cpu(server_procs), _cpu([me]), time.perf_counter()
    row = _row(record.metrics, record.calls, n, ideal_agent_s(p), p)
    row.update(
        n=n,
        api=p.get("api", "ollama"),
        coordinator=coordinator,
        run_index=run_index,
        phase_order=",".join(record.protocol.phase_order),
        run_wall_s=w1 - w0,
        harness_cpu_s=c1 - c0,
        server_cpu_s=s1 - s0,
        load_avg_1m=os.getloadavg()[0],
    )
    return row


def _sweep(
    kind: str, ns: list[int], runs: dict[int, int], p: dict[str, Any]
) -> list[dict[str, Any]]:
    rows = []
    one_fleet = kind == "ideal"  # one ideal process serves every N; sim: N processes per N
    ctx = servers(kind, max(ns), p["ttft_ms"], p["token_ms"]) if one_fleet else None
    fleet = ctx.__enter__() if ctx else None
    try:
        for n in ns:
            sub = servers(kind, n, p["ttft_ms"], p["token_ms"]) if not one_fleet else None
            f = sub.__enter__() if sub else fleet
            try:
                for r in range(1, runs[n] + 1):
                    coords = ("asyncio", "threads") if r % 2 else ("threads", "asyncio")
                    for coord in coords:
                        row = run_execute(f, n, coord, r, p)
                        row["servers"] = kind
                        rows.append(row)
                        log(
                            f"harness_overhead [{kind}, {row['api']}] N={n:2d} {coord:7s} run {r}: "
                            f"true eff {row['true_efficiency']:.3f} %, coordination "
                            f"{row['coordination_overhead_ms']:.2f} ms, wall-solo "
                            f"{row['wall_minus_solo_ms']:.1f} ms"
                        )
            finally:
                if sub:
                    sub.__exit__(None, None, None)
    finally:
        if ctx:
            ctx.__exit__(None, None, None)
    return rows


def _group(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> list[dict[str, Any]]:
    out: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        out.setdefault(tuple(row[k] for k in keys), []).append(row)
    metrics = (
        "true_efficiency",
        "coordination_overhead_ms",
        "wall_minus_ideal_ms",
        "wall_minus_solo_ms",
        "solo_minus_ideal_ms",
        "concurrent_ttft_error_ms_median",
    )
    table = []
    for key, group in sorted(out.items()):
        entry = dict(zip(keys, key, strict=True))
        for m in metrics:
            entry[m] = summary([g[m] for g in group if g.get(m) is not None])
        table.append(entry)
    return table


def peer_sweep(p: dict[str, Any]) -> list[dict[str, Any]]:
    """Every client of :mod:`benchmarks.peers` on the same ideal servers, N by N; in each run
    the clients take turns in :func:`peers.order_of_run`'s order."""
    from mabench.measure.agents import build_plans

    q = {**p, "num_predict": p["peer_num_predict"]}
    rows = []
    with servers("ideal", max(p["peer_ns"]), q["ttft_ms"], q["token_ms"]) as fleet:
        for n in p["peer_ns"]:
            urls = {f"s{i:02d}": u for i, u in enumerate(fleet.urls[:n])}
            study = make_study(urls, "asyncio", q)
            plans = build_plans(study, study.config("c1"), urls, "corpus")
            for r in range(1, p["peer_runs"][n] + 1):
                for client in peers.order_of_run(r):
                    row = peers.run_client(client, plans, q["ttft_ms"])
                    row.update(run_index=r, load_avg_1m=os.getloadavg()[0])
                    rows.append(row)
                    log(
                        f"harness_overhead [peers] N={n:2d} {client:12s} run {r}: "
                        f"loss {row['efficiency_loss']:.3f} %, wall-solo "
                        f"{row['wall_minus_solo_ms']:.1f} ms, TTFT error "
                        f"{row['concurrent_ttft_error_ms_median']:.2f} ms"
                    )
    return rows


PEER_METRICS = (
    "efficiency_loss",
    "true_efficiency",
    "wall_minus_solo_ms",
    "coordination_overhead_ms",
    "concurrent_ttft_error_ms_median",
    "solo_ttft_error_ms_median",
    "client_cpu_s",
)


def peer_summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per N and client: each metric's median and spread over the runs."""
    groups: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["n"], row["client"]), []).append(row)
    order = {c: i for i, c in enumerate(peers.CLIENTS)}
    table = []
    for (n, client), group in sorted(groups.items(), key=lambda kv: (kv[0][0], order[kv[0][1]])):
        entry: dict[str, Any] = {"n": n, "client": client}
        for m in PEER_METRICS:
            entry[m] = summary([g[m] for g in group if g.get(m) is not None])
        table.append(entry)
    return table


def _peer_goals(res: Result, table: list[dict[str, Any]]) -> None:
    """Per N: our better coordinator's median loss is no more than the best peer's."""
    for n in sorted({e["n"] for e in table}):
        ours = {e["client"]: e for e in table if e["n"] == n and e["client"] in peers.OURS}
        theirs = {e["client"]: e for e in table if e["n"] == n and e["client"] in peers.PEERS}
        if not ours or not theirs:
            continue
        best_ours = min(ours, key=lambda c: ours[c]["efficiency_loss"]["median"])
        best_peer = min(theirs, key=lambda c: theirs[c]["efficiency_loss"]["median"])
        o, t = ours[best_ours]["efficiency_loss"], theirs[best_peer]["efficiency_loss"]
        res.goal(
            f"true-efficiency loss, N={n}, ours vs the best peer",
            o["median"],
            "<=",
            t["median"],
            "%",
            f"{best_ours} median of {o['n']} runs (min {o['min']}, max {o['max']}); best peer "
            f"{best_peer} (min {t['min']}, max {t['max']}); shorter workload, see details.peers",
        )


def _goals(res: Result, summary: list[dict[str, Any]], label: str) -> None:
    """The goals of one sweep's summary: true efficiency (``GOALS``) and the coordination
    overhead at N = 2; ``label`` ends each goal's name (", OpenAI API")."""
    by = {(e["n"], e["coordinator"]): e for e in summary}
    for n, target in GOALS.items():
        for coord in ("asyncio", "threads"):
            e = by.get((n, coord))
            if e is None:
                continue
            s = e["true_efficiency"]
            res.goal(
                f"true efficiency, N={n}, {coord}{label}",
                s.get("median"),
                ">=",
                target,
                "%",
                f"median of {s.get('n')} runs (min {s.get('min')}, max {s.get('max')})",
            )
    for coord in ("asyncio", "threads"):
        e = by.get((2, coord))
        if e is not None:
            s = e["coordination_overhead_ms"]
            res.goal(
                f"coordination overhead per run, N=2, {coord}{label}",
                s.get("median"),
                "<=",
                OVERHEAD_GOAL_MS,
                "ms",
                f"median of {s.get('n')} runs (max {s.get('max')})",
            )


def run(quick: bool = False) -> Result:
    p = dict(QUICK if quick else FULL)
    res = Result("harness_overhead", TITLE)
    a_s = ideal_agent_s(p)
    res.details["parameters"] = {
        **p,
        "ideal_agent_s": a_s,
        "servers": "benchmarks.idealserver: one process, all ports, exact timing",
    }

    main = _sweep("ideal", p["ns"], p["runs"], p)
    sim = _sweep("sim", p["sim_ns"], p["sim_runs"], p)

    summary_main = _group(main, ("n", "coordinator"))
    res.details["summary"] = summary_main
    res.details["sim_comparison"] = _group(sim, ("n", "coordinator"))
    res.details["runs"] = main
    res.details["sim_runs"] = sim

    _goals(res, summary_main, "")
    openai = _sweep("ideal", p["openai_ns"], p["openai_runs"], {**p, "api": "openai"})
    summary_openai = _group(openai, ("n", "coordinator"))
    res.details["openai"] = {"summary": summary_openai, "runs": openai}
    _goals(res, summary_openai, ", OpenAI API")
    peer_rows = peer_sweep(p)
    peer_table = peer_summary(peer_rows)
    a_peer = ideal_agent_s({**p, "num_predict": p["peer_num_predict"]})
    res.details["peers"] = {"ideal_agent_s": a_peer, "summary": peer_table, "runs": peer_rows}
    _peer_goals(res, peer_table)
    res.notes.append(
        f"Peers (details.peers): clients {', '.join(peers.CLIENTS)}; peer workload A = "
        f"{a_peer:.3f} s ({p['calls']} calls x (ttft {p['ttft_ms']:g} ms + "
        f"{p['peer_num_predict'] - 1} x {p['token_ms']:g} ms)); efficiency loss = 100 - true "
        "efficiency, relative to it."
    )
    res.notes.append(
        f"Ideal agent time A = {a_s:.3f} s ({p['calls']} calls x (ttft {p['ttft_ms']:g} ms + "
        f"{p['num_predict'] - 1} x {p['token_ms']:g} ms)); efficiency goals are relative to it."
    )
    return res
