"""Coordinators: how a run's phases run its agents, one after another (solo) or all at once.

- ``asyncio``: one event loop for the whole run, one async client per agent (Ollama's or the
  OpenAI one, by the agent's server: :mod:`mabench.measure.apis`), ``asyncio.TaskGroup``
  (the first failure cancels the other agents).
- ``threads``: one thread per agent and phase with a blocking client; a barrier
  releases all agents together, so thread start-up is outside the measured interval. The
  phase's clock is read by the barrier's action, after every thread arrived and before any is
  released, so no agent's first request precedes its phase's start.

Garbage collection is paused while a phase runs (as ``timeit`` does): a full collection walks
every object the process holds, and one in the middle of a concurrent phase stalls every
agent's stream at once. Objects still go when their last reference does; only reference cycles
made during a phase wait until it ends.

A coordinator lives for one run: each agent's client (and its keep-alive connection) is made
once, opened by the unmeasured warm-up call and reused by every measured phase, so no phase
measures connection set-up. Both return the same :class:`PhaseOutcome`, so the run record
does not depend on the choice.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from types import TracebackType
from typing import TypeVar

from mabench.measure.agents import (
    AgentOutcome,
    AgentPlan,
    Clock,
    ready,
    run_agent_async,
    run_agent_sync,
)
from mabench.measure.apis import AsyncClient, SyncClient, async_client, sync_client
from mabench.measure.client import Timeouts
from mabench.measure.collector import gc_paused
from mabench.measure.errors import RunFailed
from mabench.measure.records import CallRecord, Span

COORDINATORS = ("asyncio", "threads")
T = TypeVar("T")


@dataclass
class PhaseOutcome:
    phase: Span
    agent_spans: list[Span]
    calls: list[CallRecord]


def _collect(
    phase: str, t0: int, t1: int, outcomes: Sequence[AgentOutcome], clock: Clock
) -> PhaseOutcome:
    return PhaseOutcome(
        phase=Span(phase, None, t0, t1),
        agent_spans=[o.span for o in outcomes],
        calls=[c for o in outcomes for c in o.records(clock)],
    )


class Coordinator:
    """Runs a run's phases; use as a context manager (it closes the agents' connections)."""

    def __init__(self, timeouts: Timeouts) -> None:
        self.timeouts = timeouts

    def run_phase(
        self, plans: Sequence[AgentPlan], phase: str, *, concurrent: bool, clock: Clock
    ) -> PhaseOutcome:
        """Run ``plans`` one after another or all at once, with the collector paused."""
        with gc_paused():
            return self._run(plans, phase, concurrent, clock)

    def _run(
        self, plans: Sequence[AgentPlan], phase: str, concurrent: bool, clock: Clock
    ) -> PhaseOutcome:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Coordinator:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class AsyncioCoordinator(Coordinator):
    def __init__(self, timeouts: Timeouts) -> None:
        super().__init__(timeouts)
        self._runner = asyncio.Runner()
        self._clients: dict[str, AsyncClient] = {}

    def _client(self, plan: AgentPlan) -> AsyncClient:
        if plan.name not in self._clients:
            self._clients[plan.name] = async_client(plan.server, plan.url, self.timeouts)
        return self._clients[plan.name]

    def _run(
        self, plans: Sequence[AgentPlan], phase: str, concurrent: bool, clock: Clock
    ) -> PhaseOutcome:
        return self._runner.run(self._phase(plans, phase, concurrent, clock))

    async def _phase(
        self, plans: Sequence[AgentPlan], phase: str, concurrent: bool, clock: Clock
    ) -> PhaseOutcome:
        clients = [self._client(p) for p in plans]
        if not concurrent:
            t0 = clock.now()
            outcomes = [
                await run_agent_async(ready(p, c, phase), c, clock)
                for p, c in zip(plans, clients, strict=True)
            ]
            return _collect(phase, t0, clock.now(), outcomes, clock)
        agents = [ready(p, c, phase) for p, c in zip(plans, clients, strict=True)]
        t0 = clock.now()
        try:
            async with asyncio.TaskGroup() as tg:
                tasks = [
                    tg.create_task(run_agent_async(a, c, clock))
                    for a, c in zip(agents, clients, strict=True)
                ]
        except* RunFailed as group:
            raise group.exceptions[0] from None
        t1 = clock.now()
        return _collect(phase, t0, t1, [t.result() for t in tasks], clock)

    def close(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        try:
            for c in clients:
                self._runner.run(c.aclose())
        finally:
            self._runner.close()


class ThreadsCoordinator(Coordinator):
    def __init__(self, timeouts: Timeouts) -> None:
        super().__init__(timeouts)
        self._clients: dict[str, SyncClient] = {}

    def _client(self, plan: AgentPlan) -> SyncClient:
        if plan.name not in self._clients:
            self._clients[plan.name] = sync_client(plan.server, plan.url, self.timeouts)
        return self._clients[plan.name]

    def _run(
        self, plans: Sequence[AgentPlan], phase: str, concurrent: bool, clock: Clock
    ) -> PhaseOutcome:
        clients = [self._client(p) for p in plans]
        if not concurrent:
            t0 = clock.now()
            outcomes = [
                run_agent_sync(ready(p, c, phase), c, clock)
                for p, c in zip(plans, clients, strict=True)
            ]
            return _collect(phase, t0, clock.now(), outcomes, clock)

        works = [
            partial(run_agent_sync, ready(p, c, phase), c, clock)
            for p, c in zip(plans, clients, strict=True)
        ]
        t0, t1, outcomes = release_together(works, clock.now, [f"agent-{p.name}" for p in plans])
        return _collect(phase, t0, t1, outcomes, clock)

    def close(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for c in clients:
            c.close()


def release_together(
    works: Sequence[Callable[[], T]], now: Callable[[], int], names: Sequence[str]
) -> tuple[int, int, list[T]]:
    """Run each of ``works`` in its own thread, all released at once by one barrier; return
    the phase's start and end (``now()``) and the works' results, in order.

    The barrier's action runs once every thread has arrived and before any is released: the
    phase starts then, so no work can begin before the phase's start. The first failure is
    raised once every thread has ended.
    """
    results: list[T | None] = [None] * len(works)
    errors: list[BaseException] = []
    started: list[int] = []
    gate = threading.Barrier(len(works) + 1, action=lambda: started.append(now()))

    def work(i: int) -> None:
        gate.wait()
        try:
            results[i] = works[i]()
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=work, args=(i,), name=name, daemon=True)
        for i, name in enumerate(names)
    ]
    for t in threads:
        t.start()
    gate.wait()
    for t in threads:
        t.join()
    t1 = now()
    if errors:
        raise errors[0]
    return started[0], t1, [r for r in results if r is not None]


def open_coordinator(kind: str, timeouts: Timeouts) -> Coordinator:
    """The coordinator ``kind`` (``asyncio`` or ``threads``) for one run."""
    if kind == "asyncio":
        return AsyncioCoordinator(timeouts)
    if kind == "threads":
        return ThreadsCoordinator(timeouts)
    raise ValueError(f"unknown coordinator {kind!r} (choose one of {', '.join(COORDINATORS)})")
