"""Experimental variants of library code, to measure a proposed fix before it is made.

Nothing here is used by mabench itself. A :class:`Session` runs a run's warm-up and phases
one of three ways, so a benchmark can alternate them (A/B) in one process:

* ``product``: ``mabench.coordinators.run_phase``, exactly as ``execute_run`` calls it. Each
  call creates fresh HTTP clients (and, for ``asyncio``, a fresh event loop), so every agent's
  first call of every measured phase opens a new TCP connection inside the measured interval
  (and each client costs ~40 ms of CPU loading the CA bundle for an SSL context, before it).
* ``persistent_clients``: the library's phase code (barrier, TaskGroup, spans, records) with
  each agent's client created once per run, warmed up by the warm-up call and reused by both
  measured phases (``asyncio``: one event loop for all of them).
* ``persistent_lean_clients``: as above, with :class:`LeanAsyncClient` /
  :class:`LeanSyncClient`: the same request body, the same ``_StreamParser`` and timestamps,
  on a bare keep-alive socket instead of httpx + httpcore + anyio.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

from mabench.agents import (
    AgentOutcome,
    AgentPlan,
    Clock,
    run_agent_async,
    run_agent_sync,
    warmup_plan,
)
from mabench.client import AsyncOllamaClient, OllamaClient, Timeouts
from mabench.coordinators import PhaseOutcome, _collect, run_phase
from mabench.errors import RunFailed
from mabench.records import CONCURRENT, SOLO

# ---------------------------------------------------------------------------------------------
# The variant: one client per agent per run, warmed up, reused by both measured phases
# ---------------------------------------------------------------------------------------------


async def _phase_async(
    plans: Sequence[AgentPlan],
    clients: Sequence[AsyncOllamaClient],
    phase: str,
    concurrent: bool,
    clock: Clock,
) -> PhaseOutcome:
    # mabench.coordinators._phase_async without creating and closing the clients
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
            await run_agent_async(p, c, phase, clock) for p, c in zip(plans, clients, strict=True)
        ]
        t1 = clock.now()
    return _collect(phase, t0, t1, outcomes)


def _phase_threads(
    plans: Sequence[AgentPlan],
    clients: Sequence[OllamaClient],
    phase: str,
    concurrent: bool,
    clock: Clock,
) -> PhaseOutcome:
    # mabench.coordinators._phase_threads without creating and closing the clients
    if not concurrent:
        t0 = clock.now()
        outcomes = [run_agent_sync(p, c, phase, clock) for p, c in zip(plans, clients, strict=True)]
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


# ---------------------------------------------------------------------------------------------
# The second variant: persistent clients AND a lean HTTP/1.1 streaming path for /api/chat
# and /api/generate (what httpx + httpcore + anyio cost per request and per chunk is most of
# the harness's CPU at N = 16 on 2 cores: ~1-2 ms per request, ~0.2 ms per chunk)
# ---------------------------------------------------------------------------------------------


def _request_bytes(host: str, path: str, body: dict) -> bytes:
    import json

    data = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nhost: {host}\r\naccept: */*\r\n"
        f"content-type: application/json\r\ncontent-length: {len(data)}\r\n\r\n"
    )
    return head.encode() + data


def _head(raw: bytes) -> tuple[int, dict[str, str]]:
    lines = raw.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if line:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
    return status, headers


class LeanAsyncClient:
    """The streamed call of ``AsyncOllamaClient`` on a bare asyncio stream (keep-alive).

    Same request body, same ``_StreamParser``, same timestamps (``t_sent`` when the request is
    handed to the transport); no error translation beyond what the experiment needs.
    """

    def __init__(self, base_url: str) -> None:
        from urllib.parse import urlsplit

        u = urlsplit(base_url)
        self.base_url = base_url.rstrip("/")
        self.host, self.port = u.hostname or "127.0.0.1", u.port or 80
        self.reader = self.writer = None

    async def _connect(self) -> None:
        import socket

        if self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            sock = self.writer.get_extra_info("socket")
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    async def aclose(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    async def call(
        self, endpoint, model, prompt, *, system=None, options=None, keep_alive=-1, phase=None
    ):
        import time

        from mabench.client import _call_body, _StreamParser

        path = f"/api/{endpoint}"
        body = _call_body(endpoint, model, prompt, system, options or {}, keep_alive, True)
        request = _request_bytes(f"{self.host}:{self.port}", path, body)
        await self._connect()
        reader, writer = self.reader, self.writer
        t_sent = time.perf_counter_ns()
        writer.write(request)
        status, headers = _head(await reader.readuntil(b"\r\n\r\n"))
        if status != 200:
            raise RuntimeError(f"HTTP {status}")
        parser = _StreamParser(endpoint, self.base_url + path, phase, t_sent)
        pending = b""
        if headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int((await reader.readline()).split(b";", 1)[0], 16)
                if size == 0:
                    await reader.readline()
                    break
                pending += (await reader.readexactly(size + 2))[:-2]
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    parser.feed(line.decode("utf-8"))
        else:
            pending = await reader.readexactly(int(headers["content-length"]))
        if pending:
            parser.feed(pending.decode("utf-8"))
        if headers.get("connection", "").lower() == "close":
            await self.aclose()
        return parser.result()


class LeanSyncClient:
    """The blocking twin of :class:`LeanAsyncClient` (a socket and a buffered reader)."""

    def __init__(self, base_url: str) -> None:
        from urllib.parse import urlsplit

        u = urlsplit(base_url)
        self.base_url = base_url.rstrip("/")
        self.host, self.port = u.hostname or "127.0.0.1", u.port or 80
        self.sock = self.file = None

    def _connect(self) -> None:
        import socket

        if self.sock is None:
            self.sock = socket.create_connection((self.host, self.port))
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.file = self.sock.makefile("rb")

    def close(self) -> None:
        if self.sock is not None:
            self.file.close()
            self.sock.close()
            self.sock = self.file = None

    def call(
        self, endpoint, model, prompt, *, system=None, options=None, keep_alive=-1, phase=None
    ):
        import time

        from mabench.client import _call_body, _StreamParser

        path = f"/api/{endpoint}"
        body = _call_body(endpoint, model, prompt, system, options or {}, keep_alive, True)
        request = _request_bytes(f"{self.host}:{self.port}", path, body)
        self._connect()
        f = self.file
        t_sent = time.perf_counter_ns()
        self.sock.sendall(request)
        raw = b""
        while not raw.endswith(b"\r\n\r\n"):
            raw += f.readline()
        status, headers = _head(raw)
        if status != 200:
            raise RuntimeError(f"HTTP {status}")
        parser = _StreamParser(endpoint, self.base_url + path, phase, t_sent)
        pending = b""
        if headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int(f.readline().split(b";", 1)[0], 16)
                if size == 0:
                    f.readline()
                    break
                pending += f.read(size + 2)[:-2]
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    parser.feed(line.decode("utf-8"))
        else:
            pending = f.read(int(headers["content-length"]))
        if pending:
            parser.feed(pending.decode("utf-8"))
        if headers.get("connection", "").lower() == "close":
            self.close()
        return parser.result()


class Session:
    """One variant's way of running a run's phases: warmed up once, then any phases."""

    def __init__(
        self, variant: str, coordinator: str, plans: Sequence[AgentPlan], timeouts: Timeouts
    ) -> None:
        self.variant, self.coordinator, self.plans, self.timeouts = (
            variant,
            coordinator,
            list(plans),
            timeouts,
        )
        self.runner: asyncio.Runner | None = None
        self.clients: list = []
        if variant != "product":
            lean = variant == "persistent_lean_clients"
            if coordinator == "asyncio":
                self.runner = asyncio.Runner()
                make = LeanAsyncClient if lean else (lambda url: AsyncOllamaClient(url, timeouts))
                self.clients = [self.runner.run(_make(make, p.url)) for p in self.plans]
            else:
                self.clients = [
                    LeanSyncClient(p.url) if lean else OllamaClient(p.url, timeouts)
                    for p in self.plans
                ]
        # the unmeasured warm-up call of every agent, through the coordinator (as execute_run)
        self.phase([warmup_plan(p) for p in self.plans], SOLO, Clock())

    def phase(self, plans: Sequence[AgentPlan], phase: str, clock: Clock) -> PhaseOutcome:
        concurrent = phase == CONCURRENT
        if self.variant == "product":
            return run_phase(
                self.coordinator,
                plans,
                phase,
                concurrent=concurrent,
                clock=clock,
                timeouts=self.timeouts,
            )
        clients = self.clients[: len(plans)]
        if self.runner is not None:
            return self.runner.run(_phase_async(plans, clients, phase, concurrent, clock))
        return _phase_threads(plans, clients, phase, concurrent, clock)

    def close(self) -> None:
        if self.runner is not None:
            for c in self.clients:
                self.runner.run(c.aclose())
            self.runner.close()
        else:
            for c in self.clients:
                c.close()


async def _make(factory, url: str):
    return factory(url)


VARIANTS = ("product", "persistent_clients", "persistent_lean_clients")
