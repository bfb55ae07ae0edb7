"""Ollama HTTP client, async and sync, with client-side timestamps; the bases every client shares.

Both clients share one request builder and one stream parser, so the asyncio and the threads
coordinator measure exactly the same thing. What does not depend on the API (the connection
and httpx handling: :class:`AsyncClientBase`, :class:`SyncClientBase`; a call's timestamps,
text and chunk count: :class:`StreamBookkeeping`) is shared with the OpenAI clients
(:mod:`mabench.measure.openai_client`). The timed calls (:meth:`call`: streamed chat and
generate) go through :mod:`mabench.measure.transport`, a lean keep-alive connection per client; the
management calls (version, tags, ps, show, load, unload) through httpx, created on first use.
Timestamps are ``time.perf_counter_ns()`` taken when the request is handed to the socket,
when the first non-empty token arrives, when the last token arrives and when the final chunk
has been read.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Self

import httpx

from mabench.api.ollama import Metrics
from mabench.measure.arrivals import TokenArrivals
from mabench.measure.errors import (
    ProtocolError,
    ServerCallError,
    ServerConnectError,
    ServerHTTPError,
    ServerStreamError,
    ServerTimeoutError,
)
from mabench.measure.transport import (
    NDJSON,
    AsyncConnection,
    LineSink,
    SyncConnection,
    error_message,
    json_body,
)

if TYPE_CHECKING:  # the OpenAI client builds on this module
    from mabench.measure.openai_client import CompletionMetrics

__all__ = [
    "AsyncClientBase",
    "AsyncOllamaClient",
    "CallResult",
    "ClientBase",
    "LoadResult",
    "OllamaClient",
    "PreparedCall",
    "StreamBookkeeping",
    "SyncClientBase",
    "Timeouts",
]


@dataclass(frozen=True)
class Timeouts:
    connect_s: float = 10.0
    request_s: float = 300.0
    load_s: float = 600.0

    def httpx(self, read_s: float) -> httpx.Timeout:
        return httpx.Timeout(connect=self.connect_s, read=read_s, write=self.connect_s, pool=None)


@dataclass(frozen=True)
class CallResult:
    """One streamed generation as the client saw it, plus what the server said of it: Ollama's
    final metrics, or an OpenAI-compatible server's counts and timings."""

    text: str
    t_sent_ns: int
    t_first_token_ns: int | None
    t_last_token_ns: int | None
    t_done_ns: int
    chunks: int
    metrics: Metrics | CompletionMetrics
    done_reason: str | None
    #: arrival (perf_counter_ns) of every chunk that carried text, in order
    arrivals_ns: tuple[int, ...] = ()
    #: connections the call opened: 0 when it reused the agent's open connection
    reconnects: int = 0


@dataclass(frozen=True)
class PreparedCall:
    """One streamed call, built and ready to leave: a client's ``prepare`` makes it (the
    request's bytes and its parser) and ``send`` sends it, once. The coordinators prepare each
    agent's first call before the phase starts, so that a phase's requests leave as soon as
    their agents are released, not one request's building after another."""

    path: str
    body: bytes
    #: what the transport feeds the answer's lines to (the parser, or the SSE framing over it)
    sink: LineSink
    #: the parser that keeps the call's timestamps and text (``result()``)
    parser: StreamBookkeeping
    phase: str | None
    accept: str = NDJSON


@dataclass(frozen=True)
class LoadResult:
    """A model load: the server's load time (None where the API does not report one)."""

    done_reason: str | None
    load_duration_ns: int | None
    wall_ns: int


# ---------------------------------------------------------------------------------------------
# Shared request building and response parsing
# ---------------------------------------------------------------------------------------------


def _call_body(
    endpoint: str,
    model: str,
    prompt: str,
    system: str | None,
    options: dict[str, Any],
    keep_alive: float | str,
    stream: bool,
) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "stream": stream, "keep_alive": keep_alive}
    if options:
        body["options"] = options
    if endpoint == "chat":
        messages = [{"role": "system", "content": system}] if system else []
        messages.append({"role": "user", "content": prompt})
        body["messages"] = messages
    elif endpoint == "generate":
        body["prompt"] = prompt
        if system:
            body["system"] = system
    else:
        raise ValueError(f"unknown endpoint {endpoint!r} (chat or generate)")
    return body


#: ``json.loads`` without its per-call work (sniffing a bytes line's encoding: NDJSON is UTF-8)
_DECODE = json.JSONDecoder().decode


def _show(line: bytes | str) -> str:
    text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
    return repr(text[:120])


class StreamBookkeeping:
    """What every stream parser keeps of one call, whatever the wire format: when the request
    left, when each piece of text arrived (:class:`~mabench.measure.arrivals.TokenArrivals`),
    the text, and how many chunks were read.

    A parser calls :meth:`chunk` for every chunk it reads and :meth:`text` for each piece of
    generated text with the clock reading of its arrival; :meth:`call_result` assembles the
    :class:`CallResult` once the parser has the server's final metrics.
    """

    def __init__(self, url: str, phase: str | None) -> None:
        self.url = url
        self.phase = phase
        self.t_sent_ns = 0
        self.arrivals = TokenArrivals()
        self.parts: list[str] = []
        self.chunks = 0
        #: connections the transport opened for this call (set by the client after it)
        self.reconnects = 0

    def started(self, t_sent_ns: int) -> None:
        self.t_sent_ns = t_sent_ns

    def chunk(self) -> None:
        self.chunks += 1

    def text(self, now_ns: int, piece: str) -> None:
        """A non-empty piece of generated text arrived at ``now_ns``."""
        self.arrivals.text(now_ns)
        self.parts.append(piece)

    def call_result(self, metrics: Any, done_reason: str | None, t_done_ns: int) -> CallResult:
        """The call as measured; ``t_done_ns``: when the parser had read the final chunk."""
        return CallResult(
            text="".join(self.parts),
            t_sent_ns=self.t_sent_ns,
            t_first_token_ns=self.arrivals.first_ns,
            t_last_token_ns=self.arrivals.last_ns,
            t_done_ns=t_done_ns,
            chunks=self.chunks,
            metrics=metrics,
            done_reason=done_reason,
            arrivals_ns=tuple(self.arrivals.times_ns),
            reconnects=self.reconnects,
        )


class _StreamParser(StreamBookkeeping):
    """Consumes NDJSON lines of a chat/generate stream and keeps the client timestamps."""

    def __init__(self, endpoint: str, url: str, phase: str | None) -> None:
        super().__init__(url, phase)
        self.endpoint = endpoint
        self.final: dict[str, Any] | None = None

    def line(self, line: bytes | str) -> None:
        now = time.perf_counter_ns()
        if not line.strip():
            return
        if self.final is not None:
            raise ProtocolError("data after the final chunk", url=self.url, phase=self.phase)
        try:
            obj = _DECODE(line.decode("utf-8") if isinstance(line, bytes) else line)
        except ValueError:  # UnicodeDecodeError included
            raise ProtocolError(
                f"invalid JSON in stream chunk {self.chunks + 1}: {_show(line)}",
                url=self.url,
                phase=self.phase,
            ) from None
        if not isinstance(obj, dict):
            raise ProtocolError(
                f"stream chunk is not an object: {_show(line)}", url=self.url, phase=self.phase
            )
        if "error" in obj:
            raise ServerStreamError(str(obj["error"]), url=self.url, phase=self.phase)
        self.chunk()
        if self.endpoint == "chat":
            message = obj.get("message") or {}
            piece = message.get("content", "") if isinstance(message, dict) else ""
        else:
            piece = obj.get("response", "")
        if not isinstance(piece, str):
            raise ProtocolError(
                f"chunk content is not a string: {piece!r}", url=self.url, phase=self.phase
            )
        if piece:
            self.text(now, piece)
        if obj.get("done") is True:
            self.final = obj

    def result(self) -> CallResult:
        t_done = time.perf_counter_ns()
        if self.final is None:
            raise ProtocolError(
                f"stream ended after {self.chunks} chunk(s) without a final chunk (truncated answer)",
                url=self.url,
                phase=self.phase,
            )
        try:
            metrics = Metrics.from_json(self.final)
        except ValueError as exc:
            raise ProtocolError(
                f"final chunk without metrics: {exc}", url=self.url, phase=self.phase
            ) from None
        return self.call_result(metrics, self.final.get("done_reason"), t_done)


def _translate(exc: Exception, url: str, phase: str | None, timeout_s: float) -> ServerCallError:
    if isinstance(exc, ServerCallError):
        return exc
    if isinstance(exc, httpx.TimeoutException):
        return ServerTimeoutError(
            f"no answer for {timeout_s:g} s ({type(exc).__name__}); raise timeouts in the config "
            "if the model is just slow",
            url=url,
            phase=phase,
        )
    if isinstance(exc, httpx.ConnectError):
        return ServerConnectError(
            f"cannot connect ({exc}); is the server running?", url=url, phase=phase
        )
    if isinstance(exc, httpx.RemoteProtocolError):
        return ProtocolError(f"connection broke mid-answer ({exc})", url=url, phase=phase)
    if isinstance(exc, httpx.HTTPError):
        return ServerConnectError(f"{type(exc).__name__}: {exc}", url=url, phase=phase)
    raise exc


def _checked_json(resp: httpx.Response, url: str, phase: str | None) -> Any:
    """The JSON body of a complete response, or the typed error it stands for."""
    if resp.status_code != 200:
        raise ServerHTTPError(
            error_message(resp.content), url=url, phase=phase, status=resp.status_code
        )
    try:
        return json.loads(resp.content)
    except ValueError:
        raise ProtocolError(
            f"invalid JSON answer: {resp.content[:120]!r}", url=url, phase=phase
        ) from None


def _models_in(payload: Any, url: str, endpoint: str) -> list[dict[str, Any]]:
    models = payload.get("models") if isinstance(payload, dict) else None
    if not isinstance(models, list):
        raise ProtocolError(f"{endpoint} answer has no 'models' list", url=url, phase=endpoint)
    return models


def _load_body(
    model: str, options: dict[str, Any] | None, keep_alive: float | str
) -> dict[str, Any]:
    """An empty-prompt generate: loads the model with ``options`` (or unloads, keep_alive 0)."""
    body: dict[str, Any] = {"model": model, "prompt": "", "stream": False, "keep_alive": keep_alive}
    if options:
        body["options"] = options
    return body


def _load_result(data: Any, t0: int) -> LoadResult:
    wall = time.perf_counter_ns() - t0
    if not isinstance(data, dict):
        raise ValueError("load answer is not an object")
    return LoadResult(data.get("done_reason"), int(data.get("load_duration") or 0), wall)


def _version_of(data: Any) -> str:
    return str(data.get("version", "")) if isinstance(data, dict) else ""


class ClientBase:
    """What every client shares, whatever the API: the server, the timeouts, the request
    headers (an API key), the timed connection of the streamed calls, httpx for the rest.

    :class:`AsyncClientBase` and :class:`SyncClientBase` add the connection and the JSON
    calls; an API's client adds its requests and parsers on top of one of them.
    """

    def __init__(
        self, base_url: str, timeouts: Timeouts | None, headers: dict[str, str] | None = None
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeouts = timeouts or Timeouts()
        self.headers = dict(headers or {})

    def _httpx_options(self) -> dict[str, Any]:
        return {
            "base_url": self.base_url,
            "timeout": self.timeouts.httpx(self.timeouts.request_s),
            # a plain-http server needs no CA bundle (loading it costs ~40 ms of CPU)
            "verify": self.base_url.startswith("https:"),
            "headers": self.headers,
        }


class AsyncClientBase(ClientBase):
    """The asyncio side: one :class:`AsyncConnection` and an ``httpx.AsyncClient`` made on
    first use. Use as ``async with Client(url) as c``."""

    def __init__(
        self, base_url: str, timeouts: Timeouts | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(base_url, timeouts, headers)
        self._conn = AsyncConnection(
            self.base_url, self.timeouts.connect_s, self.timeouts.request_s, self.headers
        )
        self._http_client: httpx.AsyncClient | None = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._conn.aclose()
        if self._http_client is not None:
            await self._http_client.aclose()
            self._http_client = None

    async def _json(self, method: str, path: str, body: Any, phase: str, read_s: float) -> Any:
        url = self.base_url + path
        if self._http_client is None:
            self._http_client = httpx.AsyncClient(**self._httpx_options())
        try:
            resp = await self._http_client.request(
                method, path, json=body, timeout=self.timeouts.httpx(read_s)
            )
        except Exception as exc:
            raise _translate(exc, url, phase, read_s) from exc
        return _checked_json(resp, url, phase)


class SyncClientBase(ClientBase):
    """The blocking twin of :class:`AsyncClientBase` (the threads coordinator)."""

    def __init__(
        self, base_url: str, timeouts: Timeouts | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(base_url, timeouts, headers)
        self._conn = SyncConnection(
            self.base_url, self.timeouts.connect_s, self.timeouts.request_s, self.headers
        )
        self._http_client: httpx.Client | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._conn.close()
        if self._http_client is not None:
            self._http_client.close()
            self._http_client = None

    def _json(self, method: str, path: str, body: Any, phase: str, read_s: float) -> Any:
        url = self.base_url + path
        if self._http_client is None:
            self._http_client = httpx.Client(**self._httpx_options())
        try:
            resp = self._http_client.request(
                method, path, json=body, timeout=self.timeouts.httpx(read_s)
            )
        except Exception as exc:
            raise _translate(exc, url, phase, read_s) from exc
        return _checked_json(resp, url, phase)


class _OllamaRequests:
    """What both Ollama clients share: the streamed call, built (path, body and parser)."""

    base_url: str

    def prepare(
        self,
        endpoint: str,
        model: str,
        prompt: str,
        *,
        system: str | None = None,
        options: dict[str, Any] | None = None,
        keep_alive: float | str = -1,
        phase: str | None = None,
    ) -> PreparedCall:
        """One streamed chat or generate call, built and not sent (see :class:`PreparedCall`)."""
        path = f"/api/{endpoint}"
        body = _call_body(endpoint, model, prompt, system, options or {}, keep_alive, True)
        parser = _StreamParser(endpoint, self.base_url + path, phase)
        return PreparedCall(path, json_body(body), parser, parser, phase)


# ---------------------------------------------------------------------------------------------
# Async client
# ---------------------------------------------------------------------------------------------


class AsyncOllamaClient(_OllamaRequests, AsyncClientBase):
    """Async client for one server. Use as ``async with AsyncOllamaClient(url) as c``."""

    async def version(self) -> str:
        return _version_of(
            await self._json("GET", "/api/version", None, "version", self.timeouts.request_s)
        )

    async def tags(self) -> list[dict[str, Any]]:
        data = await self._json("GET", "/api/tags", None, "tags", self.timeouts.request_s)
        return _models_in(data, self.base_url, "tags")

    async def ps(self) -> list[dict[str, Any]]:
        data = await self._json("GET", "/api/ps", None, "ps", self.timeouts.request_s)
        return _models_in(data, self.base_url, "ps")

    async def show(self, model: str) -> dict[str, Any]:
        return await self._json(
            "POST", "/api/show", {"model": model}, "show", self.timeouts.request_s
        )

    async def load(
        self, model: str, options: dict[str, Any] | None = None, keep_alive: float | str = -1
    ) -> LoadResult:
        """Load ``model`` with ``options`` (an empty-prompt generate, as ``ollama run`` does)."""
        t0 = time.perf_counter_ns()
        body = _load_body(model, options, keep_alive)
        return _load_result(
            await self._json("POST", "/api/generate", body, "load", self.timeouts.load_s), t0
        )

    async def unload(self, model: str) -> LoadResult:
        t0 = time.perf_counter_ns()
        body = _load_body(model, None, 0)
        return _load_result(
            await self._json("POST", "/api/generate", body, "unload", self.timeouts.load_s), t0
        )

    async def call(self, endpoint: str, model: str, prompt: str, **kwargs: Any) -> CallResult:
        """One streamed call, timed on the client: :meth:`prepare` (its keyword arguments), then
        :meth:`send`."""
        return await self.send(self.prepare(endpoint, model, prompt, **kwargs))

    async def send(self, call: PreparedCall) -> CallResult:
        """Send a call made by :meth:`prepare` and read its streamed answer."""
        opened = self._conn.opened
        await self._conn.stream(call.path, call.body, call.sink, call.phase, call.accept)
        call.parser.reconnects = self._conn.opened - opened
        return call.parser.result()  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------------------
# Sync client (the threads coordinator)
# ---------------------------------------------------------------------------------------------


class OllamaClient(_OllamaRequests, SyncClientBase):
    """Blocking twin of :class:`AsyncOllamaClient`: same methods, same results."""

    def version(self) -> str:
        return _version_of(
            self._json("GET", "/api/version", None, "version", self.timeouts.request_s)
        )

    def tags(self) -> list[dict[str, Any]]:
        return _models_in(
            self._json("GET", "/api/tags", None, "tags", self.timeouts.request_s),
            self.base_url,
            "tags",
        )

    def ps(self) -> list[dict[str, Any]]:
        return _models_in(
            self._json("GET", "/api/ps", None, "ps", self.timeouts.request_s), self.base_url, "ps"
        )

    def show(self, model: str) -> dict[str, Any]:
        return self._json("POST", "/api/show", {"model": model}, "show", self.timeouts.request_s)

    def load(
        self, model: str, options: dict[str, Any] | None = None, keep_alive: float | str = -1
    ) -> LoadResult:
        t0 = time.perf_counter_ns()
        body = _load_body(model, options, keep_alive)
        return _load_result(
            self._json("POST", "/api/generate", body, "load", self.timeouts.load_s), t0
        )

    def unload(self, model: str) -> LoadResult:
        t0 = time.perf_counter_ns()
        body = _load_body(model, None, 0)
        return _load_result(
            self._json("POST", "/api/generate", body, "unload", self.timeouts.load_s), t0
        )

    def call(self, endpoint: str, model: str, prompt: str, **kwargs: Any) -> CallResult:
        """One streamed call, timed on the client: :meth:`prepare` (its keyword arguments), then
        :meth:`send`."""
        return self.send(self.prepare(endpoint, model, prompt, **kwargs))

    def send(self, call: PreparedCall) -> CallResult:
        """Send a call made by :meth:`prepare` and read its streamed answer."""
        opened = self._conn.opened
        self._conn.stream(call.path, call.body, call.sink, call.phase, call.accept)
        call.parser.reconnects = self._conn.opened - opened
        return call.parser.result()  # type: ignore[attr-defined]
