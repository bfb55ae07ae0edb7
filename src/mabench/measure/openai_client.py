"""OpenAI-compatible HTTP client, async and sync, with client-side timestamps.

The twin of :mod:`mabench.measure.client` for servers that speak the OpenAI API (vLLM, SGLang,
TGI, llama.cpp's server, LM Studio, Ollama's ``/v1``, our embedded server). It shares the
Ollama clients' connection and httpx handling (:mod:`mabench.measure.client_base`) and call
bookkeeping (:class:`~mabench.measure.call.StreamBookkeeping`); what differs is the API:

* the timed call (:meth:`call`) streams ``POST /v1/chat/completions`` as Server-Sent Events
  over the timed transport and asks for usage (``stream_options.include_usage``); the first
  token is the first chunk whose delta has content (a role-only opening chunk is not a token);
* token counts come from ``usage``, else from llama.cpp's ``timings``, else the client counts
  the streamed content deltas (llama-cpp-python's server ignores ``include_usage``); each
  count says where it came from (:class:`~mabench.measure.call.CompletionMetrics`). The server's time splits are
  known only where a server adds ``timings``; otherwise they are None, never zero;
* the prompt tokens a server took from its cache come from
  ``usage.prompt_tokens_details.cached_tokens`` (OpenAI, vLLM, SGLang), else llama.cpp's
  ``timings.cache_n``; None where the server says neither (:func:`cached_prompt_tokens`);
* management (the blocking client): models from ``GET /v1/models``; :meth:`load` is a
  non-streamed one-token completion (the API has no load, but a server that loads models on demand loads it now);
  there is no unload and no list of loaded models in the API; a server's own prompt-cache
  reset, where it has one (:meth:`OpenAIClient.reset_cache`, :meth:`OpenAIClient.slot_ids`);
* an API key goes in an ``authorization: Bearer`` header and is cut out of any error message
  a server sends back, so it never reaches a record, a log or the report.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import httpx

from mabench.api.ollama import Options
from mabench.api.openai import (
    CHAT_PATH,
    DONE,
    MODELS_PATH,
    ChatCompletionRequest,
    StreamChunk,
    Timings,
    Usage,
    model_ids,
    parse_completion,
)
from mabench.measure.call import (
    CallResult,
    CompletionMetrics,
    LoadResult,
    PreparedCall,
    StreamBookkeeping,
)
from mabench.measure.client_base import AsyncClientBase, SyncClientBase, Timeouts
from mabench.measure.errors import (
    ProtocolError,
    ServerCallError,
    ServerConnectError,
    ServerHTTPError,
    ServerStreamError,
)
from mabench.measure.transport import SSE, SSEFraming, error_message, json_body

__all__ = ["AsyncOpenAIClient", "OpenAIClient", "cached_prompt_tokens"]

#: llama.cpp server's slots (each holds one sequence's KV cache)
SLOTS_PATH = "/slots"

#: what the load step asks for (one token)
LOAD_PROMPT = "Reply with the single word: ready."
#: the HTTP statuses of a route a server does not have (or has switched off: llama.cpp's
#: /slots without --slots answers 501)
NOT_OFFERED = (404, 405, 501)


def _count_at(obj: Any, *keys: str) -> int | None:
    """The non-negative integer at ``obj[keys[0]][keys[1]]...``, None where absent."""
    for key in keys:
        obj = obj.get(key) if isinstance(obj, Mapping) else None
    if isinstance(obj, bool) or not isinstance(obj, int) or obj < 0:
        return None
    return obj


def cached_prompt_tokens(chunk: Any) -> int | None:
    """The prompt tokens a streamed chunk says the server took from its prompt cache:
    ``usage.prompt_tokens_details.cached_tokens`` (OpenAI, vLLM, SGLang), else llama.cpp's
    ``timings.cache_n``; None where it says neither (never a guess)."""
    usage = _count_at(chunk, "usage", "prompt_tokens_details", "cached_tokens")
    return usage if usage is not None else _count_at(chunk, "timings", "cache_n")


class _SSEStreamParser(StreamBookkeeping):
    """Consumes the events of a streamed chat completion and keeps the client timestamps."""

    def __init__(self, url: str, phase: str | None, model: str | None = None) -> None:
        super().__init__(url, phase, model)
        self.deltas = 0  # chunks that carried content
        self.finish: str | None = None
        self.usage: Usage | None = None
        self.timings: Timings | None = None
        self.cached: int | None = None  # prompt tokens the server took from its cache
        self.done = False  # [DONE] read

    def _fail(self, message: str) -> ProtocolError:
        return ProtocolError(message, url=self.url, phase=self.phase)

    def event(self, name: str, data: str, t_arrived_ns: int) -> None:
        if self.done:
            raise self._fail("data after [DONE]")
        if name == "error":
            raise ServerStreamError(error_message(data.encode()), url=self.url, phase=self.phase)
        if data.strip() == DONE:
            self.done = True
            return
        try:
            obj = json.loads(data)
        except ValueError:
            raise self._fail(
                f"invalid JSON in stream event {self.chunks + 1}: {data[:120]!r}"
            ) from None
        if isinstance(obj, dict) and "error" in obj:
            message = error_message(data.encode())
            raise ServerStreamError(message, url=self.url, phase=self.phase)
        try:
            chunk = StreamChunk.from_json(obj)
        except ValueError as exc:
            raise self._fail(f"stream event {self.chunks + 1}: {exc}") from None
        if self.model is not None:
            self.answered_as(obj.get("model"))  # obj is a dict: StreamChunk read it
        cached = cached_prompt_tokens(obj)
        self.cached = self.cached if cached is None else cached
        self.read(chunk, t_arrived_ns)

    def read(self, chunk: StreamChunk, t_arrived_ns: int) -> None:
        self.chunk()
        if chunk.content:
            self.deltas += 1
            self.text(t_arrived_ns, chunk.content)
        if chunk.finish_reason is not None:
            self.finish = chunk.finish_reason
        self.usage = chunk.usage or self.usage
        self.timings = chunk.timings or self.timings

    def result(self) -> CallResult:
        t_done = time.perf_counter_ns()
        if self.finish is None:
            raise self._fail(
                f"stream ended after {self.chunks} chunk(s) without a finish_reason "
                "(truncated answer)"
            )
        metrics = CompletionMetrics.of(self.usage, self.timings, self.deltas, self.cached)
        return self.call_result(metrics, self.finish, t_done)


def _chat_only(endpoint: str) -> None:
    if endpoint != "chat":
        raise ValueError(
            f"OpenAI-compatible servers are measured through {CHAT_PATH}: the endpoint must "
            f"be chat, not {endpoint!r}"
        )


def _bearer(api_key: str | None) -> dict[str, str]:
    """The request header that carries ``api_key`` (none without a key)."""
    return {"authorization": f"Bearer {api_key}"} if api_key else {}


class _OpenAIRequests:
    """What both OpenAI clients share: the key kept out of errors, the streamed call, built."""

    base_url: str
    _secret: str | None

    @contextmanager
    def _secret_kept(self) -> Iterator[None]:
        """Errors whose message quotes the API key are raised with the key cut out."""
        try:
            yield
        except ServerCallError as exc:
            if not self._secret or self._secret not in exc.message:
                raise
            message = exc.message.replace(self._secret, "[API key]")
            raise type(exc)(message, url=exc.url, phase=exc.phase, status=exc.status) from None

    def prepare(
        self,
        endpoint: str,
        model: str,
        prompt: str,
        *,
        system: str | None = None,
        options: dict[str, Any] | None = None,
        phase: str | None = None,
    ) -> PreparedCall:
        """One streamed chat completion, built and not sent (see :class:`PreparedCall`)."""
        _chat_only(endpoint)
        opts = Options.from_mapping(options or {}, unknown="error")
        body = json_body(ChatCompletionRequest.for_prompt(model, prompt, system, opts).to_json())
        parser = _SSEStreamParser(self.base_url + CHAT_PATH, phase, model)
        return PreparedCall(CHAT_PATH, body, SSEFraming(parser), parser, phase, SSE)


class AsyncOpenAIClient(_OpenAIRequests, AsyncClientBase):
    """Async client for one OpenAI-compatible server (``async with AsyncOpenAIClient(url)``)."""

    def __init__(
        self, base_url: str, timeouts: Timeouts | None = None, api_key: str | None = None
    ) -> None:
        self._secret = api_key
        super().__init__(base_url, timeouts, _bearer(api_key))

    async def call(self, endpoint: str, model: str, prompt: str, **kwargs: Any) -> CallResult:
        """One streamed call, timed on the client: :meth:`prepare` (its keyword arguments), then
        :meth:`send`."""
        return await self.send(self.prepare(endpoint, model, prompt, **kwargs))

    async def send(self, call: PreparedCall) -> CallResult:
        """Send a call made by :meth:`prepare` and read its streamed answer."""
        opened = self._conn.opened
        with self._secret_kept():
            await self._conn.stream(call.path, call.body, call.sink, call.phase, call.accept)
            call.parser.reconnects = self._conn.opened - opened
            return call.parser.result()  # type: ignore[attr-defined]


class OpenAIClient(_OpenAIRequests, SyncClientBase):
    """Blocking twin of :class:`AsyncOpenAIClient` (same calls, same results), plus the
    management calls of the protocol's steps."""

    def __init__(
        self, base_url: str, timeouts: Timeouts | None = None, api_key: str | None = None
    ) -> None:
        self._secret = api_key
        super().__init__(base_url, timeouts, _bearer(api_key))

    @staticmethod
    def _load_body(model: str, options: dict[str, Any] | None) -> dict[str, Any]:
        opts = replace(Options.from_mapping(options or {}, unknown="error"), num_predict=1)
        req = ChatCompletionRequest.for_prompt(model, LOAD_PROMPT, None, opts, stream=False)
        return req.to_json()

    def _models(self, payload: Any) -> list[str]:
        try:
            return model_ids(payload)
        except ValueError as exc:
            raise ProtocolError(str(exc), url=self.base_url + MODELS_PATH, phase="models") from None

    def _loaded(self, payload: Any, t0: int) -> LoadResult:
        wall = time.perf_counter_ns() - t0
        try:
            _, finish, _ = parse_completion(payload)
        except ValueError as exc:
            raise ProtocolError(str(exc), url=self.base_url + CHAT_PATH, phase="load") from None
        return LoadResult(finish, None, wall)

    def models(self) -> list[str]:
        """The model ids the server serves (``GET /v1/models``)."""
        with self._secret_kept():
            payload = self._json("GET", MODELS_PATH, None, "models", self.timeouts.request_s)
        return self._models(payload)

    def load(
        self, model: str, options: dict[str, Any] | None = None, keep_alive: float | str = -1
    ) -> LoadResult:
        """A one-token completion with ``options`` (``keep_alive``: the API has none; unused)."""
        t0 = time.perf_counter_ns()
        body = self._load_body(model, options)
        with self._secret_kept():
            payload = self._json("POST", CHAT_PATH, body, "load", self.timeouts.load_s)
        return self._loaded(payload, t0)

    def _status(self, method: str, path: str, phase: str) -> tuple[int, bytes]:
        """A management request's HTTP status and body (no error for a status: the caller
        decides what each one means)."""
        if self._http_client is None:
            self._http_client = httpx.Client(**self._httpx_options())
        try:
            resp = self._http_client.request(method, path, timeout=self.timeouts.httpx(60.0))
        except httpx.HTTPError as exc:
            raise ServerConnectError(
                f"{type(exc).__name__}: {exc}", url=self.base_url + path, phase=phase
            ) from exc
        return resp.status_code, resp.content

    def _offered(self, status: int, body: bytes, path: str, phase: str) -> bool:
        """True for 200, False for a route the server does not offer; an error otherwise."""
        if status in NOT_OFFERED:
            return False
        if status != 200:
            url = self.base_url + path
            raise ServerHTTPError(error_message(body), url=url, phase=phase, status=status)
        return True

    def reset_cache(self, path: str) -> bool:
        """``POST path``, a server's prompt-cache reset (vLLM ``/reset_prefix_cache``, SGLang
        ``/flush_cache``, llama.cpp ``/slots/<id>?action=erase``): True when it answered 200,
        False when the server has no such route."""
        with self._secret_kept():
            status, body = self._status("POST", path, "cache_reset")
            return self._offered(status, body, path, "cache_reset")

    def slot_ids(self) -> list[int] | None:
        """The ids of llama.cpp server's slots (``GET /slots``); None when the server has no
        such route or has it switched off (started without ``--slots``)."""
        with self._secret_kept():
            status, body = self._status("GET", SLOTS_PATH, "cache_reset")
            if not self._offered(status, body, SLOTS_PATH, "cache_reset"):
                return None
        try:
            slots = json.loads(body)
        except ValueError:
            return None
        if not isinstance(slots, list) or not all(_count_at(s, "id") is not None for s in slots):
            return None
        return [s["id"] for s in slots]

    def call(self, endpoint: str, model: str, prompt: str, **kwargs: Any) -> CallResult:
        """One streamed call, timed on the client: :meth:`prepare` (its keyword arguments), then
        :meth:`send`."""
        return self.send(self.prepare(endpoint, model, prompt, **kwargs))

    def send(self, call: PreparedCall) -> CallResult:
        """Send a call made by :meth:`prepare` and read its streamed answer."""
        opened = self._conn.opened
        with self._secret_kept():
            self._conn.stream(call.path, call.body, call.sink, call.phase, call.accept)
            call.parser.reconnects = self._conn.opened - opened
            return call.parser.result()  # type: ignore[attr-defined]
