"""A lean keep-alive HTTP/1.1 connection for the timed streaming calls (chat, generate).

The management calls (version, tags, ps, show, load, unload) go through httpx; the timed calls
do not. On 2 cores, httpx + httpcore + anyio cost ~2 ms of CPU per request and ~0.2 ms per
streamed chunk: 16 concurrent agents then leave one after another and the harness measures
itself (``benchmarks/README.md``). This module is what a benchmark client needs, no more:

* one persistent connection per agent, reused across calls and phases (the unmeasured warm-up
  call opens it); a reused connection that the server closed while idle is reopened once,
  before any byte of the answer arrived, so no request is ever sent twice otherwise; every
  connection a call opens is counted (``opened``), so a measured call that paid a reconnect
  says so;
* ``Content-Length``, ``chunked`` and close-delimited bodies; ``https://`` through the standard
  ``ssl`` module and the system CA store; no proxies (a proxy would be measured too), no
  redirects, no compression (``accept-encoding: identity``);
* the client's typed errors: connect, timeout (no byte of the answer's body for ``read_s``;
  once the body has begun, no byte for ``stall_s``: a server that stalls mid-stream fails
  after it, not after the wait a first token may need), protocol (broken or malformed answer), HTTP status with the server's error message (Ollama's ``{"error": "..."}``,
  OpenAI's ``{"error": {"message": "..."}}`` or FastAPI's ``{"detail": "..."}``);
* two framings of the streamed body: NDJSON (Ollama: one JSON object per line) and
  Server-Sent Events (OpenAI-compatible servers: :class:`SSEFraming` turns the body lines into
  events); extra request headers per connection (an API key's ``authorization``).

HTTP parsing is sans-I/O (:class:`ResponseParser`, :func:`_exchange`): the blocking and the
asyncio connection differ only in how they move bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
import time
from collections.abc import Generator, Iterator, Mapping
from functools import cache
from typing import Protocol
from urllib.parse import urlsplit

from mabench import __version__
from mabench.measure.errors import (
    ProtocolError,
    ServerConnectError,
    ServerHTTPError,
    ServerTimeoutError,
)

__all__ = [
    "NDJSON",
    "SSE",
    "AsyncConnection",
    "EventSink",
    "LineSink",
    "ResponseParser",
    "SSEFraming",
    "SyncConnection",
]

MAX_HEAD_BYTES = 64 * 1024
MAX_ERROR_BODY_BYTES = 1024 * 1024
READ_SIZE = 64 * 1024
#: media types a streamed call accepts: Ollama's NDJSON, or Server-Sent Events
NDJSON = "application/x-ndjson"
SSE = "text/event-stream"


class MalformedResponse(ValueError):
    """The bytes on the wire are not an HTTP/1.x response."""


class LineSink(Protocol):
    """Receives one streamed answer: when the request left, then each body line as it arrives."""

    def started(self, t_sent_ns: int) -> None: ...

    def line(self, raw: bytes) -> None: ...


class EventSink(Protocol):
    """Receives one Server-Sent Events stream: when the request left, then each event's data
    with the arrival time of its first line."""

    def started(self, t_sent_ns: int) -> None: ...

    def event(self, name: str, data: str, t_arrived_ns: int) -> None: ...


class SSEFraming:
    """A :class:`LineSink` that frames body lines into Server-Sent Events (WHATWG HTML, "event
    stream interpretation") for an :class:`EventSink`.

    ``data:`` lines accumulate (joined by newlines), ``event:`` names the event, a blank line
    dispatches it; comments (``:``, e.g. keep-alive pings), ``id:`` and ``retry:`` are skipped.
    Lines may end in CRLF. An event is timed when its first line is read, which is the moment
    its bytes were received (they are read as they arrive). Events without data are not
    dispatched, and an event the stream ends inside of is dropped, as the standard says.
    """

    def __init__(self, sink: EventSink) -> None:
        self.sink = sink
        self._data: list[str] = []
        self._name = ""
        self._t_first: int | None = None

    def started(self, t_sent_ns: int) -> None:
        self.sink.started(t_sent_ns)

    def line(self, raw: bytes) -> None:
        now = time.perf_counter_ns()
        text = raw.decode("utf-8", "replace").removesuffix("\r")
        if not text:
            self._dispatch()
            return
        if text.startswith(":"):
            return
        name, _, value = text.partition(":")
        value = value.removeprefix(" ")
        if self._t_first is None:
            self._t_first = now
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._name = value

    def _dispatch(self) -> None:
        data, name, t_first = self._data, self._name, self._t_first
        self._data, self._name, self._t_first = [], "", None
        if data and t_first is not None:
            self.sink.event(name or "message", "\n".join(data), t_first)


# ---------------------------------------------------------------------------------------------
# Sans-I/O: one response
# ---------------------------------------------------------------------------------------------


class ResponseParser:
    """Feed it the bytes of one HTTP/1.x response; it returns the de-chunked body bytes.

    ``status`` is set once the head is complete; ``complete`` once the body is;
    ``keep_alive`` says whether the connection may carry another request afterwards.
    """

    def __init__(self) -> None:
        self.status: int | None = None
        self.keep_alive = True
        self.complete = False
        self._buf = b""
        self._framing = ""  # "length", "chunked" or "close"
        self._remaining = 0
        self._chunk_state = "size"  # size -> data -> crlf -> size ... -> trailer

    def feed(self, data: bytes) -> bytes:
        """Consume ``data``; return the body bytes it completed."""
        buf = self._buf + data if self._buf else data
        self._buf = b""
        while self.status is None:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD_BYTES:
                    raise MalformedResponse(f"response head larger than {MAX_HEAD_BYTES} bytes")
                self._buf = buf
                return b""
            self._head(buf[:end].decode("latin-1"))
            buf = buf[end + 4 :]
        if self.complete:
            body = b""
        elif self._framing == "close":
            body = buf
        elif self._framing == "length":
            body = buf[: self._remaining]
            self._remaining -= len(body)
            self.complete = self._remaining == 0
        else:
            return self._dechunk(buf)
        if len(body) < len(buf) and self.complete:
            self.keep_alive = False  # bytes after the answer: do not trust this connection
        return body

    def eof(self) -> None:
        """The peer closed the connection: the end of a close-delimited body, else a break."""
        if self.status is not None and self._framing == "close":
            self.complete = True
            self.keep_alive = False
            return
        if not self.complete:
            where = "before the answer's head" if self.status is None else "mid-answer"
            raise ConnectionError(f"the server closed the connection {where}")

    def _head(self, head: str) -> None:
        status_line, *lines = head.split("\r\n")
        version, _, rest = status_line.partition(" ")
        code = rest[:3]
        if not version.startswith("HTTP/1.") or not code.isdigit():
            raise MalformedResponse(f"not an HTTP/1.x status line: {status_line[:80]!r}")
        headers: dict[str, str] = {}
        for line in lines:
            name, sep, value = line.partition(":")
            if not sep:
                raise MalformedResponse(f"malformed header line: {line[:80]!r}")
            headers[name.strip().lower()] = value.strip()
        status = int(code)
        if 100 <= status < 200:
            return  # an interim answer (100 Continue): the real head follows
        self.status = status
        connection = headers.get("connection", "").lower()
        self.keep_alive = (
            connection == "keep-alive" if version == "HTTP/1.0" else connection != "close"
        )
        if "chunked" in headers.get("transfer-encoding", "").lower():
            self._framing = "chunked"
        elif "content-length" in headers:
            try:
                self._remaining = int(headers["content-length"])
            except ValueError:
                raise MalformedResponse(
                    f"bad content-length {headers['content-length']!r}"
                ) from None
            self._framing = "length"
            self.complete = self._remaining == 0
        elif status in (204, 304):
            self._framing = "length"
            self.complete = True
        else:
            self._framing = "close"
            self.keep_alive = False

    def _dechunk(self, buf: bytes) -> bytes:
        out: list[bytes] = []
        pos = self._whole_chunks(buf, out) if self._chunk_state == "size" else 0
        end = len(buf)
        while pos < end and not self.complete:
            if self._chunk_state == "data":
                take = min(self._remaining, end - pos)
                out.append(buf[pos : pos + take])
                pos += take
                self._remaining -= take
                if self._remaining == 0:
                    self._chunk_state = "crlf"
                continue
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                if end - pos > MAX_HEAD_BYTES:
                    raise MalformedResponse("chunk framing line too long")
                break
            line, pos = buf[pos:eol], eol + 2
            if self._chunk_state == "size":
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise MalformedResponse(f"bad chunk size line {line[:40]!r}") from None
                self._remaining = size
                self._chunk_state = "data" if size else "trailer"
            elif self._chunk_state == "crlf":
                if line:
                    raise MalformedResponse("a chunk is longer than its announced size")
                self._chunk_state = "size"
            elif not line:  # trailer section ends with an empty line
                self.complete = True
        self._buf = buf[pos:]
        if self.complete and self._buf:
            self.keep_alive = False
        return out[0] if len(out) == 1 else b"".join(out)

    @staticmethod
    def _whole_chunks(buf: bytes, out: list[bytes]) -> int:
        """The common case, without the state machine: from a chunk's size line, take every
        chunk that ``buf`` holds whole (``size\\r\\n data \\r\\n``, no extension) into ``out``;
        return where the rest starts, at a size line, for :meth:`_dechunk` to go on from.

        A streamed token is one chunk, usually read whole (~5 µs of a ~9 µs chunk went to the
        state machine's steps)."""
        pos, end = 0, len(buf)
        while True:
            eol = buf.find(b"\r\n", pos, pos + 18)
            if eol < 0:
                return pos
            try:
                size = int(buf[pos:eol], 16)
            except ValueError:
                return pos  # an extension, or a bad line: the state machine says which
            start = eol + 2
            stop = start + size
            if size <= 0 or stop + 2 > end or buf[stop : stop + 2] != b"\r\n":
                return pos
            out.append(buf[start:stop])
            pos = stop + 2


def error_message(body: bytes) -> str:
    """The server's error message (``{"error": "..."}``, ``{"error": {"message": "..."}}`` or
    ``{"detail": "..."}``), or the start of whatever it sent."""
    try:
        data = json.loads(body)
    except ValueError:
        text = body.decode("utf-8", "replace").strip()
        return text[:500] or "(empty body)"
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict):
            error = error.get("message")
        if isinstance(error, str):
            return error
        if isinstance(data.get("detail"), str):
            return data["detail"]
    return json.dumps(data)[:500]


Outcome = tuple[bool, ServerHTTPError | None]


def _exchange(sink: LineSink, url: str, phase: str | None) -> Generator[bool, bytes, Outcome]:
    """The protocol of one streamed answer, as a generator that is sent the received bytes.

    ``b""`` means the peer closed. Body lines go to ``sink`` as they complete. Each step yields
    whether the answer's body has begun (a line went to ``sink``): from then on a silence is a
    stall. Returns whether the connection may be reused, and for an error status the
    :class:`ServerHTTPError` to raise (with the server's message, once its whole body is in).
    """
    parser = ResponseParser()
    pending = b""
    began = False
    while True:
        data = yield began
        try:
            if data:
                body = parser.feed(data)
            else:
                body = b""
                parser.eof()
        except MalformedResponse as exc:
            raise ProtocolError(f"malformed HTTP answer ({exc})", url=url, phase=phase) from None
        except ConnectionError as exc:
            raise ProtocolError(f"connection broke ({exc})", url=url, phase=phase) from None
        if parser.status is None:
            continue
        pending += body
        if parser.status != 200:
            if len(pending) > MAX_ERROR_BODY_BYTES or parser.complete:
                message = error_message(pending[:MAX_ERROR_BODY_BYTES])
                error = ServerHTTPError(message, url=url, phase=phase, status=parser.status)
                return parser.complete and parser.keep_alive, error
            continue
        if b"\n" in pending:
            *lines, pending = pending.split(b"\n")
            for line in lines:
                sink.line(line)
            began = True
        if parser.complete:
            if pending:
                sink.line(pending)
            return parser.keep_alive, None


# ---------------------------------------------------------------------------------------------
# Connections: where the bytes come from
# ---------------------------------------------------------------------------------------------


@cache
def _tls_context() -> ssl.SSLContext:
    return ssl.create_default_context()  # loads the CA store once per process, https only


class _Stalled(TimeoutError):
    """No byte for ``stall_s`` after the answer's body had begun."""


class _Target:
    """What both connections know about the server: address, TLS, timeouts, request bytes."""

    def __init__(
        self,
        base_url: str,
        connect_s: float,
        read_s: float,
        headers: Mapping[str, str] | None = None,
        stall_s: float | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"server URL must be http://host:port or https://..., not {base_url!r}"
            )
        self.base_url = base_url.rstrip("/")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.tls = parts.scheme == "https"
        self.connect_s = connect_s
        self.read_s = read_s
        self.stall_s = read_s if stall_s is None else min(stall_s, read_s)
        default_port = self.port == (443 if self.tls else 80)
        host = f"[{self.host}]" if ":" in self.host else self.host
        self._host_header = host if default_port else f"{host}:{self.port}"
        self._extra = "".join(f"{_header(k, v)}\r\n" for k, v in (headers or {}).items())

    def request(self, path: str, body: bytes, accept: str = NDJSON) -> bytes:
        head = (
            f"POST {path} HTTP/1.1\r\nhost: {self._host_header}\r\n"
            f"user-agent: mabench/{__version__}\r\naccept: {accept}\r\n"
            f"accept-encoding: identity\r\ncontent-type: application/json\r\n"
            f"{self._extra}content-length: {len(body)}\r\n\r\n"
        )
        return head.encode("latin-1") + body

    def connect_failed(self, exc: BaseException, phase: str | None) -> ServerConnectError:
        reason = (
            f"no answer within {self.connect_s:g} s" if isinstance(exc, TimeoutError) else str(exc)
        )
        return ServerConnectError(
            f"cannot connect ({reason}); is the server running?", url=self.base_url, phase=phase
        )

    def timed_out(self, url: str, phase: str | None, stalled: bool) -> ServerTimeoutError:
        if stalled:
            message = (
                f"no answer for {self.stall_s:g} s after the stream began: the server stalled "
                "mid-answer; raise timeouts.read_s in the config if the model is just slow "
                "between tokens"
            )
        else:
            message = (
                f"no answer for {self.read_s:g} s; raise timeouts.request_s in the config if the "
                "model is just slow"
            )
        return ServerTimeoutError(message, url=url, phase=phase)


def _header(name: str, value: str) -> str:
    """One request header line; a name or value that could break the request is refused."""
    if any(c in name + value for c in "\r\n\0") or not name.isascii() or ":" in name:
        raise ValueError(f"request header {name!r} has a character HTTP does not allow")
    return f"{name}: {value}"


_STALE = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)


def _start(sink: LineSink, url: str, phase: str | None, t_sent: int) -> Generator:
    sink.started(t_sent)
    steps = _exchange(sink, url, phase)
    next(steps)
    return steps


class _Connection:
    """What both connections share: the target, failure translation, the end of an answer.

    ``read_s``: the longest wait for the answer's body; ``stall_s`` (at most ``read_s``, the
    same when None): the longest silence once the body has begun."""

    def __init__(
        self,
        base_url: str,
        connect_s: float,
        read_s: float,
        headers: Mapping[str, str] | None = None,
        stall_s: float | None = None,
    ) -> None:
        self.target = _Target(base_url, connect_s, read_s, headers, stall_s)
        #: connections opened so far (a caller takes the difference around one call)
        self.opened = 0

    def _drop(self) -> None:
        raise NotImplementedError

    @contextlib.contextmanager
    def _guard(self, url: str, phase: str | None) -> Iterator[None]:
        """Drop the connection on any failure; socket failures become typed errors."""
        try:
            yield
        except OSError as exc:  # TimeoutError included
            self._drop()
            if isinstance(exc, TimeoutError):  # socket.timeout is TimeoutError
                raise self.target.timed_out(url, phase, isinstance(exc, _Stalled)) from None
            raise ProtocolError(f"connection broke ({exc})", url=url, phase=phase) from exc
        except BaseException:
            self._drop()
            raise

    def _settle(self, outcome: Outcome) -> None:
        reusable, error = outcome
        if not reusable:
            self._drop()
        if error is not None:
            raise error


class SyncConnection(_Connection):
    """One blocking keep-alive connection to one server (the threads coordinator)."""

    def __init__(
        self,
        base_url: str,
        connect_s: float,
        read_s: float,
        headers: Mapping[str, str] | None = None,
        stall_s: float | None = None,
    ) -> None:
        super().__init__(base_url, connect_s, read_s, headers, stall_s)
        self._sock: socket.socket | None = None

    def close(self) -> None:
        self._drop()

    def _drop(self) -> None:
        if self._sock is not None:
            sock, self._sock = self._sock, None
            sock.close()

    def _open(self, phase: str | None) -> socket.socket:
        t = self.target
        try:
            sock = socket.create_connection((t.host, t.port), timeout=t.connect_s)
            if t.tls:
                sock = _tls_context().wrap_socket(sock, server_hostname=t.host)
        except OSError as exc:
            raise t.connect_failed(exc, phase) from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(t.read_s)
        self._sock = sock
        self.opened += 1
        return sock

    def _attempt(self, request: bytes, phase: str | None) -> tuple[socket.socket, int, bytes]:
        sock = self._sock or self._open(phase)
        _wait_at_most(sock, self.target.read_s)  # a reused socket waited stall_s last
        t_sent = time.perf_counter_ns()
        with contextlib.suppress(*_STALE):
            sock.sendall(request)
            return sock, t_sent, sock.recv(READ_SIZE)
        return sock, t_sent, b""

    def _send(self, request: bytes, phase: str | None) -> tuple[socket.socket, int, bytes]:
        """Send; returns the socket, when the request left and the first bytes of the answer.

        A kept-alive connection that the server closed while idle answers nothing: it is
        reopened and the request sent again, once."""
        reused = self._sock is not None
        sock, t_sent, first = self._attempt(request, phase)
        if first or not reused:
            return sock, t_sent, first
        self._drop()
        return self._attempt(request, phase)

    def stream(
        self, path: str, body: bytes, sink: LineSink, phase: str | None, accept: str = NDJSON
    ) -> None:
        """POST ``body`` to ``path`` and feed the streamed answer's lines to ``sink``."""
        url = self.target.base_url + path
        with self._guard(url, phase):
            sock, t_sent, data = self._send(self.target.request(path, body, accept), phase)
            steps = _start(sink, url, phase, t_sent)
            try:
                outcome = self._receive(sock, steps, data)
            except StopIteration as done:
                outcome = done.value
        self._settle(outcome)

    def _receive(self, sock: socket.socket, steps: Generator, data: bytes) -> Outcome:
        """Feed the answer's bytes to ``steps`` until it returns (``StopIteration``): the
        socket waits ``read_s`` for the body, then ``stall_s`` between reads."""
        while not steps.send(data):
            data = sock.recv(READ_SIZE)
        _wait_at_most(sock, self.target.stall_s)
        while True:
            try:
                data = sock.recv(READ_SIZE)
            except TimeoutError:
                raise _Stalled() from None
            steps.send(data)


def _wait_at_most(sock: socket.socket, seconds: float) -> None:
    """Make ``sock``'s reads time out after ``seconds`` (a system call only on a change)."""
    if sock.gettimeout() != seconds:
        sock.settimeout(seconds)


class _Answer:
    """One request's answer as it arrives over an :class:`_AnswerProtocol`: each received
    piece goes to the answer's ``_exchange`` steps at once, and ``done`` resolves with the
    outcome, the error, or :data:`_NOTHING` (a reused connection ended before any byte).

    The read timeout is one timer per answer, re-armed only when it fires early: "no byte
    for ``read_s``" (``stall_s`` once the body has begun) without a timer per read.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sink: LineSink,
        where: tuple[str, str | None],
        t_sent: int,
        limits_s: tuple[float, float],
        reused: bool,
    ) -> None:
        self.loop = loop
        self.done: asyncio.Future = loop.create_future()
        self._sink, self._where, self._t_sent = sink, where, t_sent
        self._read_s, self._stall_s = limits_s
        self._began = False  # the body has begun: a silence is a stall
        self._reused = reused
        self._steps: Generator | None = None
        self._last = loop.time()
        self._timer = loop.call_at(self._last + self._read_s, self._check_idle)

    def feed(self, data: bytes) -> None:
        """Bytes of the answer, or ``b""``: the peer closed."""
        if self.done.done():
            return  # the peer closed after the answer
        if self._steps is None:
            if not data and self._reused:
                self._settle(_NOTHING)
                return
            self._steps = _start(self._sink, *self._where, self._t_sent)
        self._last = self.loop.time()
        try:
            began = self._steps.send(data)
        except StopIteration as end:
            self._settle(end.value)
        except Exception as exc:
            self._settle(exc)
        else:
            if began and not self._began:  # from now on the shorter stall_s: re-arm once
                self._began = True
                self._timer.cancel()
                self._timer = self.loop.call_at(self._last + self._stall_s, self._check_idle)

    def broken(self, exc: Exception) -> None:
        """The connection failed: before any byte (a reset of an idle kept-alive connection)
        it is the peer closing; after, the answer is broken."""
        if self._steps is None and isinstance(exc, _STALE):
            self.feed(b"")
        elif not self.done.done():
            self._settle(exc)

    def cancel(self) -> None:
        self._timer.cancel()

    def _check_idle(self) -> None:
        due = self._last + (self._stall_s if self._began else self._read_s)
        if self.loop.time() < due:
            self._timer = self.loop.call_at(due, self._check_idle)
        elif not self.done.done():
            self._settle(_Stalled() if self._began else TimeoutError())

    def _settle(self, result: object) -> None:
        self._timer.cancel()
        if isinstance(result, Exception):
            self.done.set_exception(result)
        else:
            self.done.set_result(result)


#: what a reused connection's answer resolves to when the server had closed it while idle
_NOTHING = object()


class _AnswerProtocol(asyncio.Protocol):
    """One asyncio connection's receiving side: bytes go straight to the answer in flight,
    inside the event loop's read callback. A ``StreamReader`` read under ``asyncio.timeout``
    cost a task wake-up, a buffer and a timer per streamed chunk, about twice the CPU; with
    every agent's tokens arriving at the same instants that became the harness's own latency
    from ~64 concurrent streams (``benchmarks/README.md``, many agents)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self.closed: asyncio.Future = loop.create_future()
        self.answer: _Answer | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    @property
    def usable(self) -> bool:
        """Open, and nothing arrived that no request asked for."""
        return not self.lost and self.transport is not None and not self.transport.is_closing()

    def data_received(self, data: bytes) -> None:
        if self.answer is None or self.answer.done.done():
            self.transport.close()  # type: ignore[union-attr]  # bytes nobody asked for
            return
        self.answer.feed(data)

    def eof_received(self) -> bool:
        if self.answer is not None:
            self.answer.feed(b"")
        return False  # let the transport close

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.answer is not None:
            if exc is None:
                self.answer.feed(b"")
            else:
                self.answer.broken(exc)
        if not self.closed.done():
            self.closed.set_result(None)


class AsyncConnection(_Connection):
    """One asyncio keep-alive connection to one server (the asyncio coordinator)."""

    def __init__(
        self,
        base_url: str,
        connect_s: float,
        read_s: float,
        headers: Mapping[str, str] | None = None,
        stall_s: float | None = None,
    ) -> None:
        super().__init__(base_url, connect_s, read_s, headers, stall_s)
        self._proto: _AnswerProtocol | None = None

    async def aclose(self) -> None:
        proto, self._proto = self._proto, None
        if proto is not None and proto.transport is not None:
            proto.transport.close()
            await proto.closed

    def _drop(self) -> None:
        proto, self._proto = self._proto, None
        if proto is not None and proto.transport is not None:
            proto.transport.close()

    async def _open(self, phase: str | None) -> _AnswerProtocol:
        t = self.target
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(t.connect_s):
                _, proto = await loop.create_connection(
                    lambda: _AnswerProtocol(loop),
                    t.host,
                    t.port,
                    ssl=_tls_context() if t.tls else None,
                    server_hostname=t.host if t.tls else None,
                )
        except OSError as exc:  # TimeoutError included
            raise t.connect_failed(exc, phase) from exc
        proto.transport.get_extra_info("socket").setsockopt(
            socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
        )
        self._proto = proto
        self.opened += 1
        return proto

    async def _ask(
        self, request: bytes, sink: LineSink, where: tuple[str, str | None]
    ) -> Outcome | object:
        """Send ``request`` and wait for its answer (or :data:`_NOTHING`, see :class:`_Answer`)."""
        reused = self._proto is not None and self._proto.usable
        proto = self._proto if reused else await self._open(where[1])
        loop = asyncio.get_running_loop()
        t_sent = time.perf_counter_ns()
        limits_s = (self.target.read_s, self.target.stall_s)
        answer = _Answer(loop, sink, where, t_sent, limits_s, reused)
        proto.answer = answer  # type: ignore[union-attr]
        try:
            proto.transport.write(request)  # type: ignore[union-attr]
            return await answer.done
        finally:
            answer.cancel()
            proto.answer = None  # type: ignore[union-attr]

    async def stream(
        self, path: str, body: bytes, sink: LineSink, phase: str | None, accept: str = NDJSON
    ) -> None:
        """POST ``body`` to ``path`` and feed the streamed answer's lines to ``sink``.

        A kept-alive connection that the server closed while idle answers nothing: it is
        reopened and the request sent again, once (as :meth:`SyncConnection._send`)."""
        url = self.target.base_url + path
        request = self.target.request(path, body, accept)
        with self._guard(url, phase):
            outcome = await self._ask(request, sink, (url, phase))
            if outcome is _NOTHING:
                self._drop()
                outcome = await self._ask(request, sink, (url, phase))
        self._settle(outcome)  # type: ignore[arg-type]


#: made once: ``json.dumps`` with any option builds a new encoder for every call
_ENCODE_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def json_body(payload: object) -> bytes:
    """A request body as the server expects it (compact UTF-8 JSON)."""
    return _ENCODE_COMPACT(payload).encode("utf-8")
