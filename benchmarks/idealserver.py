"""An *ideal* Ollama-compatible server for the overhead benchmarks: exact timing, ~no CPU.

``python -m benchmarks.idealserver --servers N --ttft-ms X --token-ms Y`` listens on N free
loopback ports in ONE process and prints ``{"ports": [...]}`` on stdout once listening.

Why not ``mabench sim-serve``? The simulated server is the right reference for the protocol
tests, but it costs ~0.5 ms of CPU per streamed token (uvicorn + Starlette + json.dumps +
datetime per chunk) and ~1-2 ms per request, and N of them are N Python processes. With 16
agents on a 2-core machine those servers compete with the harness for the cores, so a
benchmark against them measures the simulated servers as much as the harness. This server is
written for the opposite goal, so that what is left is the harness:

* one process, one event loop, raw ``asyncio.Protocol``s: no framework, no per-token JSON
  encoding (every chunk's bytes are built once per request), so a token costs a few µs;
* exact timing: the first token is written ``ttft`` after the request has been *received*
  (its last byte), token i at ``ttft + i * token``, the final chunk right after the last
  token; deadlines are absolute (no drift) and the event loop uses ``select()``, whose
  timeout has microsecond resolution (epoll rounds timeouts up to whole milliseconds);
* perfectly parallel: requests never wait for each other;
* awake: with ``--busy-poll`` (how the benchmarks start it) the loop polls instead of sleeping,
  so a request is read within µs of its sending, not after a virtual CPU woke up
  (:class:`BusyPollSelector`);
* accountable: ``GET /ideal/lateness`` tells how late it wrote its chunks since the last ask
  (:class:`Lateness`), so a benchmark reports the reference's own error beside the harness's.

It speaks the subset of the Ollama API that ``mabench.measure.protocol.execute_run`` uses: ``GET /``,
``/api/version``, ``/api/tags``, ``/api/ps``, ``POST /api/show``, ``/api/generate`` and
``/api/chat`` (streamed, or empty prompt = load / ``keep_alive: 0`` = unload); and the subset
of the OpenAI API the harness uses: ``GET /v1/models`` and ``POST /v1/chat/completions``,
streamed as Server-Sent Events on the same timing (the role chunk at once, content delta i at
``ttft + i * token``, then the finish chunk, usage when asked, ``[DONE]``), or answered whole
at once (the harness's one-token load).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import selectors
import socket
import sys
import time
from typing import Any

MODEL = "smollm2:135m"
CREATED = "2025-01-01T00:00:00Z"


def _entry(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "model": name,
        "modified_at": CREATED,
        "size": 1000,
        "digest": "0" * 64,
        "details": {"format": "ideal", "family": "ideal", "parameter_size": "0"},
    }


class Settings:
    def __init__(self, ttft_ms: float, token_ms: float, default_tokens: int = 16) -> None:
        self.ttft_s = ttft_ms / 1000
        self.token_s = token_ms / 1000
        self.default_tokens = default_tokens
        self.token_ms = token_ms
        self.ttft_ms = ttft_ms


class Lateness:
    """How late this process wrote its timed chunks (µs after their deadline), all ports
    together: ``GET /ideal/lateness`` returns those since the last ask and starts afresh, so
    a benchmark can tell the reference's own lateness from the harness's."""

    def __init__(self) -> None:
        self.first: list[int] = []
        self.all: list[int] = []
        self.last: list[int] = []

    def add(self, late_s: float, first: bool, last: bool) -> None:
        us = round(late_s * 1e6)
        self.all.append(us)
        if first:
            self.first.append(us)
        if last:
            self.last.append(us)

    def take(self) -> dict[str, list[int]]:
        out = {"first": self.first, "all": self.all, "last": self.last}
        self.__init__()
        return out


LATENESS = Lateness()


class ServerState:
    """One port's state: the models it has loaded."""

    def __init__(self) -> None:
        self.loaded: set[str] = set()


def _response(status: str, body: bytes, ctype: str = "application/json") -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\ncontent-length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


_CACHE: dict[tuple[str, bool, int, int], tuple[list[bytes], bytes]] = {}


def _stream_bytes(
    s: Settings, model: str, chat: bool, n: int, prompt_tokens: int
) -> tuple[list[bytes], bytes]:
    """The chunks of one streamed answer (token i is ``tok{i} ``) and its final chunk."""

    def content(text: str) -> dict[str, Any]:
        return {"message": {"role": "assistant", "content": text}} if chat else {"response": text}

    chunks = [
        _chunk(
            json.dumps(
                {"model": model, "created_at": CREATED, "done": False, **content(f"tok{i} ")}
            ).encode()
            + b"\n"
        )
        for i in range(n)
    ]
    final = {
        "model": model,
        "created_at": CREATED,
        "done": True,
        "done_reason": "length",
        **content(""),
        "total_duration": int((s.ttft_s + (n - 1) * s.token_s) * 1e9),
        "load_duration": 0,
        "prompt_eval_count": prompt_tokens,
        "prompt_eval_duration": int(max(0.0, s.ttft_ms - s.token_ms) * 1e6),
        "eval_count": n,
        "eval_duration": int(n * s.token_ms * 1e6),
    }
    tail = _chunk(json.dumps(final).encode() + b"\n") + b"0\r\n\r\n"
    return chunks, tail


_SSE_CACHE: dict[tuple[str, int, int, bool], tuple[bytes, list[bytes], bytes]] = {}


def _sse(obj: dict[str, Any] | str) -> bytes:
    data = obj if isinstance(obj, str) else json.dumps(obj, separators=(",", ":"))
    return _chunk(b"data: " + data.encode() + b"\n\n")


def _sse_bytes(
    model: str, n: int, prompt_tokens: int, include_usage: bool
) -> tuple[bytes, list[bytes], bytes]:
    """The SSE answer of one streamed chat completion: the opening role chunk, one chunk per
    token (``tok{i} ``), and the tail (finish chunk, usage if asked for, ``[DONE]``, end)."""
    base = {"id": "chatcmpl-ideal", "object": "chat.completion.chunk", "created": 0}
    base["model"] = model

    def chunk(delta: dict[str, str], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return _sse({**base, "choices": [choice]})

    opening = chunk({"role": "assistant", "content": ""})
    tokens = [chunk({"content": f"tok{i} "}) for i in range(n)]
    tail = chunk({}, "length")
    if include_usage:
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": n}
        usage["total_tokens"] = prompt_tokens + n
        tail += _sse({**base, "choices": [], "usage": usage})
    return opening, tokens, tail + _sse("[DONE]") + b"0\r\n\r\n"


def _completion(model: str, prompt_tokens: int, n: int) -> bytes:
    """A whole (non-streamed) chat completion of ``n`` tokens."""
    message = {"role": "assistant", "content": "".join(f"tok{i} " for i in range(n))}
    body = {
        "id": "chatcmpl-ideal",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": "length"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": n},
    }
    return json.dumps(body).encode()


class IdealProtocol(asyncio.Protocol):
    def __init__(self, settings: Settings, state: ServerState) -> None:
        self.settings = settings
        self.state = state
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()
        self.busy = False  # a streamed answer is in flight (HTTP/1.1: no pipelining)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while not self.busy:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].decode("latin-1").split("\r\n")
            length = 0
            for line in head[1:]:
                key, _, value = line.partition(":")
                if key.strip().lower() == "content-length":
                    length = int(value.strip())
            if len(self.buf) < end + 4 + length:
                return
            body = self.buf[end + 4 : end + 4 + length]
            self.buf = self.buf[end + 4 + length :]
            arrived = time.perf_counter()
            method, path, _ = head[0].split(" ", 2)
            self.handle(method, path, body, arrived)

    def handle(self, method: str, path: str, body: bytes, arrived: float) -> None:
        assert self.transport is not None
        write = self.transport.write
        if path == "/":
            write(_response("200 OK", b"Ollama is running", "text/plain"))
        elif path == "/api/version":
            write(_response("200 OK", b'{"version": "ideal"}'))
        elif path == "/api/tags":
            write(_response("200 OK", json.dumps({"models": [_entry(MODEL)]}).encode()))
        elif path == "/api/ps":
            models = [
                {**_entry(m), "expires_at": "2099-01-01T00:00:00Z"} for m in self.state.loaded
            ]
            write(_response("200 OK", json.dumps({"models": models}).encode()))
        elif path == "/api/show":
            write(_response("200 OK", json.dumps({"details": _entry(MODEL)["details"]}).encode()))
        elif path in ("/api/generate", "/api/chat"):
            self.generation(json.loads(body or b"{}"), chat=path == "/api/chat", arrived=arrived)
        elif path == "/ideal/lateness":
            write(_response("200 OK", json.dumps(LATENESS.take()).encode()))
        elif path == "/v1/models":
            models = {"object": "list", "data": [{"id": MODEL, "object": "model"}]}
            write(_response("200 OK", json.dumps(models).encode()))
        elif path == "/v1/chat/completions":
            self.chat_completion(json.loads(body or b"{}"), arrived=arrived)
        else:
            write(_response("404 Not Found", b'{"error": "not found"}'))

    def generation(self, req: dict[str, Any], chat: bool, arrived: float) -> None:
        assert self.transport is not None
        model = req.get("model", MODEL)
        empty = not req.get("messages") if chat else not req.get("prompt")
        if empty:
            if req.get("keep_alive") in (0, "0", "0s"):
                self.state.loaded.discard(model)
                reason = "unload"
            else:
                self.state.loaded.add(model)
                reason = "load"
            final = {"model": model, "created_at": CREATED, "done": True, "done_reason": reason}
            final.update(
                {"message": {"role": "assistant", "content": ""}} if chat else {"response": ""}
            )
            self.transport.write(_response("200 OK", json.dumps(final).encode()))
            return
        self.state.loaded.add(model)
        opts = req.get("options") or {}
        n = int(opts.get("num_predict") or 0) or self.settings.default_tokens
        s = self.settings
        if chat:
            prompt_text = " ".join(str(m.get("content", "")) for m in req["messages"])
        else:
            prompt_text = str(req.get("prompt", ""))

        # The response's bytes are built once per (model, endpoint, tokens) and cached, so a
        # request costs a dict lookup and each token one write.
        key = (model, chat, n, len(prompt_text.split()))
        cached = _CACHE.get(key)
        if cached is None:
            cached = _CACHE[key] = _stream_bytes(s, model, chat, n, max(1, key[3]))
        chunks, tail = cached
        self.transport.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
        )
        self.schedule(chunks, tail, arrived)

    def chat_completion(self, req: dict[str, Any], arrived: float) -> None:
        """``/v1/chat/completions``: streamed on the exact timing, or whole at once."""
        assert self.transport is not None
        model = req.get("model", MODEL)
        n = int(req.get("max_tokens") or 0) or self.settings.default_tokens
        text = " ".join(str(m.get("content", "")) for m in req.get("messages") or [])
        prompt_tokens = max(1, len(text.split()))
        if not req.get("stream"):
            self.transport.write(_response("200 OK", _completion(model, prompt_tokens, n)))
            return
        include = bool((req.get("stream_options") or {}).get("include_usage"))
        key = (model, n, prompt_tokens, include)
        cached = _SSE_CACHE.get(key)
        if cached is None:
            cached = _SSE_CACHE[key] = _sse_bytes(model, n, prompt_tokens, include)
        opening, chunks, tail = cached
        self.transport.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\n\r\n" + opening
        )
        self.schedule(chunks, tail, arrived)

    def schedule(self, chunks: list[bytes], tail: bytes, arrived: float) -> None:
        """Write chunk i at ``ttft + i * token`` after ``arrived``, the tail with the last.

        One timer per stream at a time: each chunk's write schedules the next, so the event
        loop's heap holds N timers, not N x tokens, and a request's arrival costs one push."""
        self.busy = True
        # loop.time() is time.monotonic(); convert the perf_counter arrival to it once.
        t0 = arrived + self.loop.time() - time.perf_counter()
        self._next(chunks, tail, t0 + self.settings.ttft_s, 0)

    def _next(self, chunks: list[bytes], tail: bytes, t_first: float, i: int) -> None:
        due = t_first + i * self.settings.token_s
        self.loop.call_at(due, self._emit, chunks, tail, t_first, i, due)

    def _emit(self, chunks: list[bytes], tail: bytes, t_first: float, i: int, due: float) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        last = i == len(chunks) - 1
        self.transport.write(chunks[i] + tail if last else chunks[i])
        LATENESS.add(self.loop.time() - due, i == 0, last)
        if not last:
            self._next(chunks, tail, t_first, i + 1)
            return
        self.busy = False
        if self.buf:
            self.data_received(b"")

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


async def serve(n: int, settings: Settings, host: str = "127.0.0.1") -> None:
    loop = asyncio.get_running_loop()
    servers, ports = [], []
    for _ in range(n):
        state = ServerState()
        server = await loop.create_server(
            lambda st=state: IdealProtocol(settings, st), host=host, port=0
        )
        servers.append(server)
        ports.append(server.sockets[0].getsockname()[1])
    print(json.dumps({"ports": ports}), flush=True)
    await asyncio.gather(*(s.serve_forever() for s in servers))


class BusyPollSelector(selectors.SelectSelector):
    """``select()`` that never sleeps: it polls until a socket is ready or the timeout is over.

    On this VM a process asleep in ``select()`` takes 0.1 to several ms to run again when a
    request arrives (its virtual CPU halted), and the harness would be charged for it as TTFT
    error and late tokens: at 64 agents the server read requests 0.7-2.8 ms (median) after the
    client sent them, 0.02-0.03 ms when polling. Polling costs one core, which on 2 cores
    leaves the harness the other: all a single-threaded (or GIL-bound) harness uses anyway.
    """

    def select(self, timeout: float | None = None) -> list:
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            ready = super().select(0)
            if ready or (end is not None and time.monotonic() >= end):
                return ready


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--servers", type=int, default=1)
    p.add_argument("--ttft-ms", type=float, default=100.0)
    p.add_argument("--token-ms", type=float, default=10.0)
    p.add_argument("--tokens", type=int, default=16, help="tokens when num_predict is unset")
    p.add_argument(
        "--busy-poll", action="store_true", help="never sleep (see BusyPollSelector; one core)"
    )
    args = p.parse_args(argv)
    selector = BusyPollSelector if args.busy_poll else selectors.SelectSelector
    settings = Settings(args.ttft_ms, args.token_ms, args.tokens)
    # select(): microsecond timeouts (epoll's are rounded up to whole milliseconds).
    with (
        asyncio.Runner(loop_factory=lambda: asyncio.SelectorEventLoop(selector())) as r,
        contextlib.suppress(KeyboardInterrupt),
    ):
        r.run(serve(args.servers, settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
