"""Coordinators: how a phase runs its agents, one after another (solo) or all at once.

- ``asyncio``: one event loop, one :class:`AsyncOllamaClient` per agent, ``asyncio.TaskGroup``
  (the first failure cancels the other agents).
- ``threads``: one thread per agent with a blocking :class:`OllamaClient`; a barrier releases
  all agents together, so thread start-up is outside the measured interval.

Both return the same :class:`PhaseOutcome`, so the run record does not depend on the choice.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from mabench.agents import AgentOutcome, AgentPlan, Clock, run_agent_async, run_agent_sync
from mabench.client import AsyncOllamaClient, OllamaClient, Timeouts
from mabench.errors import RunFailed
from mabench.records import CallRecord, Span

COORDINATORS = ("asyncio", "threads")


@dataclass
class PhaseOutcome:
    phase: Span
    agent_spans: list[Span]
    calls: list[CallRecord]


def _collect(phase: str, t0: int, t1: int, outcomes: Sequence[AgentOutcome]) -> PhaseOutcome:
    return PhaseOutcome(
        phase=Span(phase, None, t0, t1),
        agent_spans=[o.span for o in outcomes],
        calls=[c for o in outcomes for c in o.calls],
    )


# ---------------------------------------------------------------------------------------------
# asyncio
# ---------------------------------------------------------------------------------------------


async def _phase_async(
    plans: Sequence[AgentPlan], phase: str, concurrent: bool, clock: Clock, timeouts: Timeouts
) -> PhaseOutcome:
    clients = [AsyncOllamaClient(p.url, timeouts) for p in plans]
    try:
        if concurrent:
            t0 = clock.now()
            try:
                async with asyncio.TaskGroup() as tg:
                    tasks = [
                        tg.create_task(run_agent_async(p, c, phase, clock))
                        for p, c in zip(plans, clients, strict=True)
                    ]
            except* RunFailed as group:
                raise group.exceptions[0] from None
            t1 = clock.now()
            outcomes = [t.result() for t in tasks]
        else:
            t0 = clock.now()
            outcomes = [
                await run_agent_async(p, c, phase, clock)
                for p, c in zip(plans, clients, strict=True)
            ]
            t1 = clock.now()
    finally:
        for c in clients:
            await c.aclose()
    return _collect(phase, t0, t1, outcomes)


# ---------------------------------------------------------------------------------------------
# threads
# ---------------------------------------------------------------------------------------------


def _phase_threads(
    plans: Sequence[AgentPlan], phase: str, concurrent: bool, clock: Clock, timeouts: Timeouts
) -> PhaseOutcome:
    clients = [OllamaClient(p.url, timeouts) for p in plans]
    try:
        if not concurrent:
            t0 = clock.now()
            outcomes = [
                run_agent_sync(p, c, phase, clock) for p, c in zip(plans, clients, strict=True)
            ]
            return _collect(phase, t0, clock.now(), outcomes)

        results: list[AgentOutcome | None] = [None] * len(plans)
        errors: list[BaseException] = []
        gate = threading.Barrier(len(plans) + 1)

        def work(i: int) -> None:
            gate.wait()
            try:
                results[i] = run_agent_sync(plans[i], clients[i], phase, clock)
            except BaseException as exc:
                errors.append(exc)

        threads = [
            threading.Thread(target=work, args=(i,), name=f"agent-{p.name}", daemon=True)
            for i, p in enumerate(plans)
        ]
        for t in threads:
            t.start()
        gate.wait()
        t0 = clock.now()
        for t in threads:
            t.join()
        t1 = clock.now()
        if errors:
            raise errors[0]
        return _collect(phase, t0, t1, [r for r in results if r is not None])
    finally:
        for c in clients:
            c.close()


def run_phase(
    coordinator: str,
    plans: Sequence[AgentPlan],
    phase: str,
    *,
    concurrent: bool,
    clock: Clock,
    timeouts: Timeouts,
) -> PhaseOutcome:
    """Run one measured phase with the chosen coordinator."""
    if coordinator == "asyncio":
        return asyncio.run(_phase_async(plans, phase, concurrent, clock, timeouts))
    if coordinator == "threads":
        return _phase_threads(plans, phase, concurrent, clock, timeouts)
    raise ValueError(
        f"unknown coordinator {coordinator!r} (choose one of {', '.join(COORDINATORS)})"
    )
