"""The floor: the least any Python client can do with N agents at once on this machine.

A client that only moves bytes: each agent's requests are built before the phase (no prompt
to render, no answer to parse, no record to keep), it sends one, reads until the chunked
answer's last bytes (``0\\r\\n\\r\\n``), and sends the next. What it loses against the ideal
servers' exact timing is what the machine, the event loop or the threads and the GIL cost;
no harness that does real work on the same machine can lose less. :mod:`benchmarks.many_agents`
runs it beside the harness at every N, in both shapes the harness has:

* ``asyncio``: one ``asyncio.Protocol`` per agent; the next request leaves from the read
  callback that saw the answer end;
* ``threads``: one thread per agent with a blocking socket, all released by one barrier.

Only Ollama's ``/api/generate`` (NDJSON): the ideal server answers every call with
``num_predict`` chunks on the same timing, whatever the prompt.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Sequence

#: a chunked answer ends with the last (empty) chunk and no trailer
END = b"0\r\n\r\n"
MODES = ("asyncio", "threads")


def request(port: int, prompt: str, num_predict: int) -> bytes:
    """One streamed ``/api/generate`` request, as bytes."""
    body = json.dumps(
        {
            "model": "ideal",
            "prompt": prompt,
            "stream": True,
            "options": {"num_predict": num_predict},
        }
    ).encode()
    head = (
        f"POST /api/generate HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class _Agent(asyncio.Protocol):
    """One agent of the asyncio floor: sends its requests one after another."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.requests: list[bytes] = []
        self.sent = 0
        self.tail = b""
        self.done: asyncio.Future[int] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def start(self, requests: list[bytes], done: asyncio.Future[int]) -> None:
        self.requests, self.sent, self.done = requests, 0, done
        self._send()

    def _send(self) -> None:
        assert self.transport is not None
        self.transport.write(self.requests[self.sent])
        self.sent += 1

    def data_received(self, data: bytes) -> None:
        # the answer's end may straddle two reads: keep the last few bytes
        self.tail = (self.tail + data)[-len(END) :]
        if self.tail != END:
            return
        self.tail = b""
        if self.sent < len(self.requests):
            self._send()
        elif self.done is not None and not self.done.done():
            self.done.set_result(time.perf_counter_ns())

    def connection_lost(self, exc: Exception | None) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_exception(ConnectionError(f"floor: connection lost ({exc})"))


class AsyncioFloor:
    """N agents on one event loop, each with its own kept-alive connection."""

    def __init__(self, ports: Sequence[int]) -> None:
        self.ports = list(ports)
        self.runner = asyncio.Runner()
        self.agents: list[_Agent] = self.runner.run(self._connect())

    async def _connect(self) -> list[_Agent]:
        loop = asyncio.get_running_loop()
        agents = []
        for port in self.ports:
            _, agent = await loop.create_connection(_Agent, "127.0.0.1", port)
            agents.append(agent)
        return agents

    def phase(self, requests: Sequence[list[bytes]]) -> float:
        """Every agent's requests at once; the phase's wall time (s)."""
        return self.runner.run(self._phase(requests))

    async def _phase(self, requests: Sequence[list[bytes]]) -> float:
        loop = asyncio.get_running_loop()
        done = [loop.create_future() for _ in self.agents]
        t0 = time.perf_counter_ns()
        for agent, reqs, d in zip(self.agents, requests, done, strict=True):
            agent.start(reqs, d)
        ends = await asyncio.gather(*done)
        return (max(ends) - t0) / 1e9

    def close(self) -> None:
        for agent in self.agents:
            if agent.transport is not None:
                agent.transport.close()
        self.runner.close()


class ThreadsFloor:
    """N agents, one thread and one blocking kept-alive socket each."""

    def __init__(self, ports: Sequence[int]) -> None:
        self.socks = []
        for port in ports:
            sock = socket.create_connection(("127.0.0.1", port))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.socks.append(sock)

    def phase(self, requests: Sequence[list[bytes]]) -> float:
        """Every agent's requests at once (one barrier releases the threads); wall time (s)."""
        started: list[int] = []
        gate = threading.Barrier(len(self.socks) + 1, action=lambda: started.append(_now()))
        ends = [0] * len(self.socks)
        errors: list[BaseException] = []

        def agent(i: int) -> None:
            gate.wait()
            try:
                for req in requests[i]:
                    _ask(self.socks[i], req)
            except BaseException as exc:
                errors.append(exc)
            ends[i] = _now()

        threads = [threading.Thread(target=agent, args=(i,)) for i in range(len(self.socks))]
        for t in threads:
            t.start()
        gate.wait()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        return (max(ends) - started[0]) / 1e9

    def close(self) -> None:
        for sock in self.socks:
            sock.close()


def _now() -> int:
    return time.perf_counter_ns()


def _ask(sock: socket.socket, req: bytes) -> None:
    sock.sendall(req)
    tail = b""
    while tail != END:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("floor: the server closed the connection mid-answer")
        tail = (tail + data)[-len(END) :]


def open_floor(mode: str, ports: Sequence[int]) -> AsyncioFloor | ThreadsFloor:
    if mode == "asyncio":
        return AsyncioFloor(ports)
    if mode == "threads":
        return ThreadsFloor(ports)
    raise ValueError(f"unknown floor mode {mode!r} (one of {', '.join(MODES)})")
