"""The peers' clients beside the harness: the same run, streamed by the clients the field uses.

The harness streams its timed calls over its own transport (:mod:`mabench.measure.transport`).
Would a library do as well? This module drives the same ideal servers
(:mod:`benchmarks.idealserver`) with:

* ``aiohttp``: one ``ClientSession`` per agent, ``session.post(..., json=...)``, lines read
  with ``async for line in resp.content`` (what vLLM's ``bench serve`` and AIPerf stream with);
* ``httpx-async`` / ``httpx-sync``: one ``httpx.AsyncClient`` / ``httpx.Client`` per agent,
  ``client.stream("POST", ...)`` read with ``aiter_lines`` / ``iter_lines``;
* ``ollama``: the official ``ollama.AsyncClient`` per agent, ``await client.chat(...,
  stream=True)``, the agents run with ``asyncio.gather`` (the seed study's shape);

beside ours, ``ours-asyncio`` and ``ours-threads`` (the study's coordinators,
:func:`mabench.measure.coordinators.open_coordinator`, with the clients the study uses).

Every client does what a run of the harness does with the same agents (:func:`run_client`):
the same requests (prompts rendered from the same templates, each seeing the previous answer;
same model, system prompt, options, ``keep_alive``; each run first checks the peers' request
bodies against our client's, :func:`check_same_request`), one unmeasured warm-up call per
agent that opens its connection, a solo phase (each agent alone, one after another), then a
concurrent phase (all at once). The async peers run the agents with ``asyncio.gather`` in one
event loop per run; ``httpx-sync`` runs one thread per agent released together by a barrier,
as the threads coordinator does, so that only the client differs. True efficiency comes from
the same formula, :func:`mabench.measure.metrics.compute_run_metrics`, over the same spans
(each agent from before its first call to after its last; each phase from before the first
agent starts to after the last one ends).

TTFT is the first non-empty text chunk minus the send: for ours the clock reading before the
request goes to the socket (as run records measure it), for a peer the reading right before
the library's call that sends it (as vLLM's ``bench serve`` and AIPerf take it: the library's
request building is part of what its users measure). The error is that minus the server's
known time to first token.

This is benchmark code, not part of the library: the peers are measured, never used by
mabench.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from statistics import median
from typing import Any

import aiohttp
import httpx
import ollama

from mabench.measure.agents import AgentPlan, Clock, warmup_plan
from mabench.measure.client import OllamaClient, Timeouts
from mabench.measure.coordinators import PhaseOutcome, open_coordinator, release_together
from mabench.measure.metrics import compute_run_metrics
from mabench.measure.records import CONCURRENT, SOLO, Span

OURS = ("ours-asyncio", "ours-threads")
PEERS = ("aiohttp", "httpx-async", "httpx-sync", "ollama")
CLIENTS = OURS + PEERS
TIMEOUT_S = 60.0
KEEP_ALIVE = -1  # as the harness sends it


@dataclass(frozen=True)
class Request:
    """One streamed Ollama call, as the harness would send it."""

    endpoint: str  # "chat" or "generate"
    model: str
    prompt: str
    system: str | None
    options: dict[str, Any]

    @property
    def path(self) -> str:
        return f"/api/{self.endpoint}"

    def messages(self) -> list[dict[str, str]]:
        system = [{"role": "system", "content": self.system}] if self.system else []
        return [*system, {"role": "user", "content": self.prompt}]

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "stream": True, "keep_alive": KEEP_ALIVE}
        if self.options:
            body["options"] = self.options
        if self.endpoint == "chat":
            body["messages"] = self.messages()
        else:
            body["prompt"] = self.prompt
            if self.system:
                body["system"] = self.system
        return body


def request_of(plan: AgentPlan, index: int, previous: str) -> Request:
    """The agent's call ``index``, built from the plan as the harness builds it."""
    return Request(
        plan.endpoint,
        plan.info.model,
        plan.prompt(index, previous),
        plan.system,
        plan.options(index),
    )


def check_same_request(req: Request, url: str) -> None:
    """Raise unless ``req``'s body is the one the harness's client sends for the same call:
    a peer that sent other requests would be measured on other work than ours."""
    with OllamaClient(url, Timeouts()) as client:
        call = client.prepare(
            req.endpoint,
            req.model,
            req.prompt,
            system=req.system,
            options=req.options,
            keep_alive=KEEP_ALIVE,
        )
    ours = json.loads(call.body)
    if req.body() != ours:
        raise ValueError(
            f"the peers' request to {url}{req.path} is not the harness's: {req.body()} != "
            f"{ours}; build Request.body() as mabench.measure.client builds its calls"
        )


@dataclass(frozen=True)
class Timing:
    """One streamed call as a client saw it (``perf_counter_ns`` readings)."""

    t_sent_ns: int
    t_first_ns: int | None
    t_done_ns: int
    text: str

    @property
    def ttft_ms(self) -> float | None:
        return None if self.t_first_ns is None else (self.t_first_ns - self.t_sent_ns) / 1e6


class _Stream:
    """The text and timestamps of one streamed answer, fed line by line or part by part."""

    def __init__(self, endpoint: str, t_sent_ns: int, where: str) -> None:
        self.endpoint = endpoint
        self.t_sent_ns = t_sent_ns
        self.t_first_ns: int | None = None
        self.parts: list[str] = []
        self.done = False
        self.where = where

    def line(self, raw: bytes | str) -> None:
        if not raw.strip():
            return
        obj = json.loads(raw)
        if "error" in obj:
            raise RuntimeError(f"{self.where}: the server answered an error: {obj['error']}")
        content = obj["message"]["content"] if self.endpoint == "chat" else obj["response"]
        self.part(content, obj.get("done") is True)

    def part(self, content: str, done: bool) -> None:
        if content:
            if self.t_first_ns is None:
                self.t_first_ns = time.perf_counter_ns()
            self.parts.append(content)
        self.done = self.done or done

    def timing(self) -> Timing:
        if not self.done:
            raise RuntimeError(f"{self.where}: the stream ended without its final chunk")
        return Timing(self.t_sent_ns, self.t_first_ns, time.perf_counter_ns(), "".join(self.parts))


# ---------------------------------------------------------------------------------------------
# One agent's client, per peer library
# ---------------------------------------------------------------------------------------------


class AiohttpAgent:
    def __init__(self, url: str) -> None:
        self.url = url
        self.session: aiohttp.ClientSession | None = None  # made inside the event loop

    async def call(self, req: Request) -> Timing:
        if self.session is None:
            self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT_S))
        t_sent = time.perf_counter_ns()
        async with self.session.post(self.url + req.path, json=req.body()) as resp:
            resp.raise_for_status()
            stream = _Stream(req.endpoint, t_sent, f"aiohttp {self.url}")
            async for line in resp.content:
                stream.line(line)
        return stream.timing()

    async def aclose(self) -> None:
        if self.session is not None:
            await self.session.close()


class HttpxAsyncAgent:
    def __init__(self, url: str) -> None:
        self.url = url
        self.client = httpx.AsyncClient(base_url=url, timeout=TIMEOUT_S)

    async def call(self, req: Request) -> Timing:
        t_sent = time.perf_counter_ns()
        async with self.client.stream("POST", req.path, json=req.body()) as resp:
            resp.raise_for_status()
            stream = _Stream(req.endpoint, t_sent, f"httpx-async {self.url}")
            async for line in resp.aiter_lines():
                stream.line(line)
        return stream.timing()

    async def aclose(self) -> None:
        await self.client.aclose()


class HttpxSyncAgent:
    def __init__(self, url: str) -> None:
        self.url = url
        self.client = httpx.Client(base_url=url, timeout=TIMEOUT_S)

    def call(self, req: Request) -> Timing:
        t_sent = time.perf_counter_ns()
        with self.client.stream("POST", req.path, json=req.body()) as resp:
            resp.raise_for_status()
            stream = _Stream(req.endpoint, t_sent, f"httpx-sync {self.url}")
            for line in resp.iter_lines():
                stream.line(line)
        return stream.timing()

    def close(self) -> None:
        self.client.close()


class OllamaAgent:
    def __init__(self, url: str) -> None:
        self.url = url
        self.client = ollama.AsyncClient(host=url, timeout=TIMEOUT_S)

    async def call(self, req: Request) -> Timing:
        t_sent = time.perf_counter_ns()
        if req.endpoint == "chat":
            parts = await self.client.chat(
                model=req.model,
                messages=req.messages(),
                options=req.options,
                stream=True,
                keep_alive=KEEP_ALIVE,
            )
        else:
            parts = await self.client.generate(
                model=req.model,
                prompt=req.prompt,
                system=req.system or "",
                options=req.options,
                stream=True,
                keep_alive=KEEP_ALIVE,
            )
        stream = _Stream(req.endpoint, t_sent, f"ollama {self.url}")
        async for part in parts:
            text = part.message.content if req.endpoint == "chat" else part.response
            stream.part(text or "", bool(part.done))
        return stream.timing()

    async def aclose(self) -> None:
        await self.client.close()


ASYNC_AGENTS: dict[str, Callable[[str], Any]] = {
    "aiohttp": AiohttpAgent,
    "httpx-async": HttpxAsyncAgent,
    "ollama": OllamaAgent,
}


# ---------------------------------------------------------------------------------------------
# Phases: the same shape as the coordinators'
# ---------------------------------------------------------------------------------------------


@dataclass
class AgentRun:
    start_ns: int
    end_ns: int
    calls: list[Timing]


@dataclass
class Phase:
    start_ns: int
    end_ns: int
    agents: list[AgentRun]  # in plan order

    def ttfts_ms(self) -> list[float]:
        return [t for a in self.agents for c in a.calls if (t := c.ttft_ms) is not None]


async def _agent_async(plan: AgentPlan, agent: Any) -> AgentRun:
    start, previous, calls = time.perf_counter_ns(), "", []
    for i in range(len(plan.calls)):
        timing = await agent.call(request_of(plan, i, previous))
        calls.append(timing)
        previous = timing.text
    return AgentRun(start, time.perf_counter_ns(), calls)


def _agent_sync(plan: AgentPlan, agent: HttpxSyncAgent) -> AgentRun:
    start, previous, calls = time.perf_counter_ns(), "", []
    for i in range(len(plan.calls)):
        timing = agent.call(request_of(plan, i, previous))
        calls.append(timing)
        previous = timing.text
    return AgentRun(start, time.perf_counter_ns(), calls)


async def _phase_async(
    plans: Sequence[AgentPlan], agents: Sequence[Any], concurrent: bool
) -> Phase:
    t0 = time.perf_counter_ns()
    if concurrent:
        runs = list(
            await asyncio.gather(*(_agent_async(p, a) for p, a in zip(plans, agents, strict=True)))
        )
    else:
        runs = [await _agent_async(p, a) for p, a in zip(plans, agents, strict=True)]
    return Phase(t0, time.perf_counter_ns(), runs)


def _phase_threads(
    plans: Sequence[AgentPlan], agents: Sequence[HttpxSyncAgent], concurrent: bool
) -> Phase:
    if not concurrent:
        t0 = time.perf_counter_ns()
        runs = [_agent_sync(p, a) for p, a in zip(plans, agents, strict=True)]
        return Phase(t0, time.perf_counter_ns(), runs)
    # the threads coordinator's own release, so that only the client differs
    works = [partial(_agent_sync, p, a) for p, a in zip(plans, agents, strict=True)]
    t0, t1, runs = release_together(works, time.perf_counter_ns, [p.name for p in plans])
    return Phase(t0, t1, runs)


def _run_async_peer(kind: str, plans: Sequence[AgentPlan]) -> tuple[Phase, Phase]:
    async def run() -> tuple[Phase, Phase]:
        agents = [ASYNC_AGENTS[kind](p.url) for p in plans]
        try:
            await _phase_async([warmup_plan(p) for p in plans], agents, concurrent=False)
            solo = await _phase_async(plans, agents, concurrent=False)
            conc = await _phase_async(plans, agents, concurrent=True)
        finally:
            for a in agents:
                await a.aclose()
        return solo, conc

    with asyncio.Runner() as runner:
        return runner.run(run())


def _run_sync_peer(plans: Sequence[AgentPlan]) -> tuple[Phase, Phase]:
    agents = [HttpxSyncAgent(p.url) for p in plans]
    try:
        _phase_threads([warmup_plan(p) for p in plans], agents, concurrent=False)
        solo = _phase_threads(plans, agents, concurrent=False)
        conc = _phase_threads(plans, agents, concurrent=True)
    finally:
        for a in agents:
            a.close()
    return solo, conc


def _from_outcome(outcome: PhaseOutcome, origin_ns: int) -> Phase:
    """Our coordinator's phase in the same terms (its clock's offsets made absolute)."""
    by_agent: dict[str, list[Timing]] = {}
    for c in outcome.calls:
        first = None if c.t_first_token_ns is None else origin_ns + c.t_first_token_ns
        timing = Timing(origin_ns + c.t_sent_ns, first, origin_ns + c.t_done_ns, c.response_text)
        by_agent.setdefault(c.agent, []).append(timing)
    agents = [
        AgentRun(origin_ns + s.t_start_ns, origin_ns + s.t_end_ns, by_agent.get(s.agent or "", []))
        for s in outcome.agent_spans
    ]
    p = outcome.phase
    return Phase(origin_ns + p.t_start_ns, origin_ns + p.t_end_ns, agents)


def _run_ours(coordinator: str, plans: Sequence[AgentPlan]) -> tuple[Phase, Phase]:
    with open_coordinator(coordinator, Timeouts()) as coord:
        clock = Clock()
        coord.run_phase([warmup_plan(p) for p in plans], "warmup", concurrent=False, clock=clock)
        solo = coord.run_phase(plans, SOLO, concurrent=False, clock=clock)
        conc = coord.run_phase(plans, CONCURRENT, concurrent=True, clock=clock)
    return _from_outcome(solo, clock.origin), _from_outcome(conc, clock.origin)


def run_phases(client: str, plans: Sequence[AgentPlan]) -> tuple[Phase, Phase]:
    """Warm-up (unmeasured), solo and concurrent phase of ``plans`` through ``client``."""
    if client in OURS:
        return _run_ours(client.removeprefix("ours-"), plans)
    if client == "httpx-sync":
        return _run_sync_peer(plans)
    if client in ASYNC_AGENTS:
        return _run_async_peer(client, plans)
    raise ValueError(f"unknown client {client!r} (choose one of {', '.join(CLIENTS)})")


def _spans(phase: Phase, name: str, plans: Sequence[AgentPlan]) -> tuple[Span, list[Span]]:
    agents = [
        Span(name, p.name, a.start_ns, a.end_ns) for p, a in zip(plans, phase.agents, strict=True)
    ]
    return Span(name, None, phase.start_ns, phase.end_ns), agents


def run_client(client: str, plans: Sequence[AgentPlan], ttft_ms: float) -> dict[str, Any]:
    """One run of ``plans`` through ``client``: true efficiency (the library's formula over
    the measured spans), its loss, and the TTFT errors; CPU of this process over the run."""
    if client in PEERS:
        for plan in plans:
            check_same_request(request_of(plan, 0, ""), plan.url)
    cpu0 = time.process_time()
    solo, conc = run_phases(client, plans)
    cpu = time.process_time() - cpu0
    solo_phase, solo_agents = _spans(solo, SOLO, plans)
    conc_phase, conc_agents = _spans(conc, CONCURRENT, plans)
    metrics = compute_run_metrics(
        [p.info for p in plans], [], [solo_phase, conc_phase], solo_agents + conc_agents
    )
    n = len(plans)
    assert metrics.true_efficiency is not None and metrics.solo_sum_s is not None
    conc_errors = [t - ttft_ms for t in conc.ttfts_ms()]
    solo_errors = [t - ttft_ms for t in solo.ttfts_ms()]
    return {
        "client": client,
        "n": n,
        "true_efficiency": metrics.true_efficiency,
        "efficiency_loss": 100.0 - metrics.true_efficiency,
        "wall_minus_solo_ms": (metrics.concurrent_wall_s - metrics.solo_sum_s / n) * 1e3,
        "coordination_overhead_ms": metrics.coordination_overhead_ms,
        "concurrent_ttft_error_ms_median": median(conc_errors) if conc_errors else None,
        "concurrent_ttft_error_ms_max": max(conc_errors) if conc_errors else None,
        "solo_ttft_error_ms_median": median(solo_errors) if solo_errors else None,
        "calls": len(conc_errors),
        "client_cpu_s": cpu,
    }


def order_of_run(run_index: int) -> list[str]:
    """The clients' order in run ``run_index`` (1-based): rotated each run and reversed every
    other run, so no client always goes first or after the same one."""
    k = (run_index - 1) // 2 % len(CLIENTS)
    order = list(CLIENTS[k:] + CLIENTS[:k])
    return order if run_index % 2 else order[::-1]


# ---------------------------------------------------------------------------------------------
# Sequential calls (ttft_accuracy): one persistent client per peer
# ---------------------------------------------------------------------------------------------


class SequentialPeers:
    """One client per peer on one server for many sequential calls, on ``runner``'s loop (the
    async ones) or this thread (``httpx-sync``); the first call of each opens its connection."""

    def __init__(self, runner: asyncio.Runner, url: str) -> None:
        self.runner = runner
        self.sync = HttpxSyncAgent(url)
        self.agents = {k: runner.run(_made(factory, url)) for k, factory in ASYNC_AGENTS.items()}

    def call(self, peer: str, req: Request) -> Timing:
        if peer == "httpx-sync":
            return self.sync.call(req)
        return self.runner.run(self.agents[peer].call(req))

    def close(self) -> None:
        self.sync.close()
        for a in self.agents.values():
            self.runner.run(a.aclose())


async def _made(factory: Callable[[str], Any], url: str) -> Any:
    return factory(url)  # inside the loop: the async clients bind to it
