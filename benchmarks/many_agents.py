"""Benchmark 7 -- many agents: N = 32, 64, 128, 256 agents at once on ideal servers.

Each agent has its own ideal server (:mod:`benchmarks.idealserver`, one process serving every
port with exact timing), the workload of ``harness_overhead`` (2 calls × (100 ms + 39 × 25 ms):
an agent alone takes exactly A = 2.15 s). Per N and coordinator, the coordinator
``execute_run`` uses (:func:`mabench.measure.coordinators.open_coordinator`) opens every
agent's connection with the unmeasured warm-up call, then runs several concurrent phases.

True efficiency needs each agent's solo wall, and the solo phase of N agents takes N × A
(9 minutes at N = 256), so this benchmark reports a **lower bound**: ``A / concurrent wall``.
An agent alone can never beat the ideal server's exact timing (solo wall ≥ A), so
Σ solo / (N × wall) ≥ A / wall; ``harness_overhead`` measures solo walls 0-1 ms above A at
N ≤ 16. TTFT error: each concurrent call's client TTFT minus the server's exact 100 ms.

Where a coordinator stops scaling: the concurrent phase's overhead (wall − A) per N, and a
pyinstrument profile of one more concurrent phase at the largest N per coordinator in
``results/profiles/`` (not in the summary: the profiler costs the harness CPU; pyinstrument
samples only the thread that started it, so the threads coordinator's profile shows only
its main thread waiting).

Beside the harness, at every N and in both shapes, the same phases through the **floor**
(:mod:`benchmarks.floor`): a client that only moves pre-built bytes. Its efficiency is the
most that any client of that shape reaches on this machine; a goal above it cannot be met
here by any harness that does real work.
"""

from __future__ import annotations

import os
import time
from typing import Any

import psutil

from benchmarks.common import RESULTS_DIR, Result, log, servers, summary
from benchmarks.harness_overhead import FULL as HARNESS
from benchmarks.harness_overhead import ideal_agent_s, make_study

TITLE = "Many agents: N = 32-256 concurrent agents on ideal servers, both coordinators"
FULL = {**HARNESS, "many_ns": [32, 64, 128, 256], "phases": 3}
QUICK = {
    **HARNESS,
    "ttft_ms": 50.0,
    "token_ms": 10.0,
    "num_predict": 8,
    "many_ns": [32],
    "phases": 1,
}
#: goals: efficiency (lower bound) at N agents, and the median TTFT error at N = 64
GOALS = {64: 99.5, 256: 99.0}
TTFT_GOAL = (64, 2.0)
PROFILES = RESULTS_DIR / "profiles"


def _phase(coordinator, plans, clock) -> Any:
    from mabench.measure.records import CONCURRENT

    return coordinator.run_phase(plans, CONCURRENT, concurrent=True, clock=clock)


def measure(fleet, n: int, coord: str, p: dict[str, Any], profile: bool) -> list[dict]:
    """``p['phases']`` concurrent phases of ``n`` agents through ``coord``; one row each."""
    from mabench.measure.agents import Clock, build_plans, warmup_plan
    from mabench.measure.client import Timeouts
    from mabench.measure.coordinators import open_coordinator

    urls = {f"s{i:03d}": u for i, u in enumerate(fleet.urls[:n])}
    study = make_study(urls, coord, {**p, "runs": {1: 1}})
    plans = build_plans(study, study.config("c1"), urls, "corpus")
    a_s = ideal_agent_s(p)
    rows = []
    me = psutil.Process()
    with open_coordinator(coord, Timeouts()) as c:
        c.run_phase([warmup_plan(x) for x in plans], "warmup", concurrent=False, clock=Clock())
        fleet.lateness()  # from here on: each phase's own
        # with ``profile``, one more phase under pyinstrument: reported, not in the summary
        for i in range(p["phases"] + (1 if profile else 0)):
            cpu0 = sum(me.cpu_times()[:2])
            prof = None
            if i == p["phases"]:
                import pyinstrument

                prof = pyinstrument.Profiler(interval=0.001)
                prof.start()
            out = _phase(c, plans, Clock())
            if prof is not None:
                prof.stop()
                PROFILES.mkdir(parents=True, exist_ok=True)
                (PROFILES / f"many-agents-n{n}-{coord}.txt").write_text(
                    prof.output_text(unicode=False, color=False, show_all=False)
                )
            late = fleet.lateness()
            wall = (out.phase.t_end_ns - out.phase.t_start_ns) / 1e9
            ttft = [x.client_ttft_ns / 1e6 - p["ttft_ms"] for x in out.calls if x.client_ttft_ns]
            longest = max(s.t_end_ns - s.t_start_ns for s in out.agent_spans) / 1e9
            rows.append(
                {
                    "n": n,
                    "coordinator": coord,
                    "client": "harness",
                    "phase": i + 1,
                    "profiled": prof is not None,
                    "wall_s": wall,
                    "efficiency_lower_bound": 100 * a_s / wall,
                    "wall_minus_ideal_ms": (wall - a_s) * 1e3,
                    "coordination_overhead_ms": (wall - longest) * 1e3,
                    "ttft_error_ms": summary(ttft),
                    "harness_cpu_s": sum(me.cpu_times()[:2]) - cpu0,
                    # the reference's own error: how late the ideal servers wrote the chunks
                    "server_lateness_ms": late,
                    "load_avg_1m": os.getloadavg()[0],
                }
            )
            r = rows[-1]
            log(
                f"many_agents N={n:3d} {coord:7s} phase {i + 1}: efficiency >= "
                f"{r['efficiency_lower_bound']:.3f} %, wall - A {r['wall_minus_ideal_ms']:.1f} ms, "
                f"TTFT error median {r['ttft_error_ms'].get('median')} ms, "
                f"harness CPU {r['harness_cpu_s']:.2f} s, server lateness median "
                f"{late['all'].get('median')} max {late['all'].get('max')} ms"
            )
            time.sleep(0.2)
    return rows


def measure_floor(fleet, n: int, mode: str, p: dict[str, Any]) -> list[dict]:
    """``p['phases']`` concurrent phases of ``n`` agents through the floor client of ``mode``
    (after one unmeasured phase that opens the connections' paths); one row each."""
    from benchmarks.floor import open_floor, request
    from mabench.measure.collector import gc_paused

    a_s = ideal_agent_s(p)
    ports = fleet.ports[:n]
    requests = [
        [request(port, f"agent {i} call {c}", p["num_predict"]) for c in range(p["calls"])]
        for i, port in enumerate(ports)
    ]
    rows = []
    floor = open_floor(mode, ports)
    try:
        floor.phase(requests)
        fleet.lateness()
        for i in range(p["phases"]):
            with gc_paused():  # as the harness's phases
                wall = floor.phase(requests)
            rows.append(
                {
                    "n": n,
                    "coordinator": mode,
                    "client": "floor",
                    "phase": i + 1,
                    "profiled": False,
                    "wall_s": wall,
                    "efficiency_lower_bound": 100 * a_s / wall,
                    "wall_minus_ideal_ms": (wall - a_s) * 1e3,
                    "server_lateness_ms": fleet.lateness(),
                    "load_avg_1m": os.getloadavg()[0],
                }
            )
            log(
                f"many_agents N={n:3d} floor-{mode:7s} phase {i + 1}: efficiency >= "
                f"{rows[-1]['efficiency_lower_bound']:.3f} %, wall - A "
                f"{rows[-1]['wall_minus_ideal_ms']:.1f} ms"
            )
            time.sleep(0.2)
    finally:
        floor.close()
    return rows


def run(quick: bool = False) -> Result:
    p = dict(QUICK if quick else FULL)
    res = Result("many_agents", TITLE)
    res.details["parameters"] = {**p, "ideal_agent_s": ideal_agent_s(p)}
    rows: list[dict] = []
    with servers("ideal", max(p["many_ns"]), p["ttft_ms"], p["token_ms"]) as fleet:
        for n in p["many_ns"]:
            order = ("asyncio", "threads") if n % 64 else ("threads", "asyncio")
            for coord in order:
                rows += measure(fleet, n, coord, p, profile=not quick and n == max(p["many_ns"]))
                rows += measure_floor(fleet, n, coord, p)
    res.details["runs"] = rows
    table = []
    for n in p["many_ns"]:
        for coord in ("asyncio", "threads"):
            group = [
                r
                for r in rows
                if r["n"] == n
                and r["coordinator"] == coord
                and not r["profiled"]
                and r.get("client") != "floor"
            ]
            floor = [
                r["efficiency_lower_bound"]
                for r in rows
                if r["n"] == n and r["coordinator"] == coord and r.get("client") == "floor"
            ]
            ttft = [r["ttft_error_ms"]["median"] for r in group if r["ttft_error_ms"].get("n")]
            table.append(
                {
                    "n": n,
                    "coordinator": coord,
                    "efficiency_lower_bound": summary([r["efficiency_lower_bound"] for r in group]),
                    "wall_minus_ideal_ms": summary([r["wall_minus_ideal_ms"] for r in group]),
                    "ttft_error_median_ms": summary(ttft),
                    "harness_cpu_s": summary([r["harness_cpu_s"] for r in group]),
                    "floor_efficiency_lower_bound": summary(floor),
                }
            )
    res.details["summary"] = table
    by = {(e["n"], e["coordinator"]): e for e in table}
    for n, target in GOALS.items():
        for coord in ("asyncio", "threads"):
            e = by.get((n, coord))
            if e:
                s, f = e["efficiency_lower_bound"], e["floor_efficiency_lower_bound"]
                res.goal(
                    f"true efficiency (lower bound A / wall), N={n}, {coord}",
                    s.get("median"),
                    ">=",
                    target,
                    "%",
                    f"median of {s.get('n')} concurrent phases (min {s.get('min')}, max "
                    f"{s.get('max')}); the floor ({coord}, a client that only moves bytes): "
                    f"{f.get('median')} %",
                )
    n, target = TTFT_GOAL
    for coord in ("asyncio", "threads"):
        e = by.get((n, coord))
        if e:
            s = e["ttft_error_median_ms"]
            res.goal(
                f"median TTFT error of the concurrent calls, N={n}, {coord}",
                s.get("median"),
                "<=",
                target,
                "ms",
                f"median over {s.get('n')} phases of each phase's median ({n} agents x 2 calls)",
            )
    for e in table:
        res.notes.append(
            f"N={e['n']} {e['coordinator']}: efficiency >= {e['efficiency_lower_bound'].get('median')} %, "
            f"wall - A {e['wall_minus_ideal_ms'].get('median')} ms, TTFT error "
            f"{e['ttft_error_median_ms'].get('median')} ms, harness CPU "
            f"{e['harness_cpu_s'].get('median')} s per phase; floor "
            f"{e['floor_efficiency_lower_bound'].get('median')} %"
        )
    return res
