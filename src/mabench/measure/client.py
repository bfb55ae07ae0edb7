"""Ollama's native API client, async and sync, with client-side timestamps.

Both clients share one request builder and one stream parser, so the asyncio and the threads
coordinator measure exactly the same thing; what does not depend on the API (the connection,
httpx, a call's bookkeeping) comes from :mod:`mabench.measure.client_base` and
:mod:`mabench.measure.call`, shared with the OpenAI clients. The timed calls (:meth:`call`:
streamed chat and generate) go through :mod:`mabench.measure.transport`, a lean keep-alive
connection per client; the management calls of the blocking client (version, tags, ps, load,
unload: the protocol's steps before and after the measured phases) through httpx, created on
first use. Timestamps are ``time.perf_counter_ns()`` taken when the request is handed to the
socket, when the first non-empty token arrives, when the last token arrives and when the final
chunk has been read.
"""

from __future__ import annotations

import json
import time
from typing import Any

from mabench.api.ollama import Metrics
from mabench.measure.call import CallResult, LoadResult, PreparedCall, StreamBookkeeping
from mabench.measure.client_base import AsyncClientBase, SyncClientBase, Timeouts
from mabench.measure.errors import ProtocolError, ServerStreamError
from mabench.measure.transport import json_body

#: ``Timeouts`` and ``LoadResult`` are also named here: a client is made with its timeouts, and
#: its load returns a load result (their home is :mod:`~mabench.measure.client_base` and
#: :mod:`~mabench.measure.call`)
__all__ = ["AsyncOllamaClient", "LoadResult", "OllamaClient", "Timeouts"]


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


class _StreamParser(StreamBookkeeping):
    """Consumes NDJSON lines of a chat/generate stream and keeps the client timestamps."""

    def __init__(
        self, endpoint: str, url: str, phase: str | None, model: str | None = None
    ) -> None:
        super().__init__(url, phase, model)
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
        if self.model is not None:
            self.answered_as(obj.get("model"))
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
    return LoadResult(data.get("done_reason"), _load_duration(data), wall)


def _load_duration(data: dict[str, Any]) -> int | None:
    """The load answer's ``load_duration`` (ns); None where the server leaves it out, as
    Ollama does (it answers an empty prompt with model, created_at, done and done_reason)."""
    value = data.get("load_duration")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"load answer has no valid 'load_duration' (got {value!r})")
    return value


def _version_of(data: Any) -> str:
    return str(data.get("version", "")) if isinstance(data, dict) else ""


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
        parser = _StreamParser(endpoint, self.base_url + path, phase, model)
        return PreparedCall(path, json_body(body), parser, parser, phase)


# ---------------------------------------------------------------------------------------------
# Async client (the asyncio coordinator: streamed calls only)
# ---------------------------------------------------------------------------------------------


class AsyncOllamaClient(_OllamaRequests, AsyncClientBase):
    """Async client for one server. Use as ``async with AsyncOllamaClient(url) as c``."""

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
# Sync client (the threads coordinator and the protocol's management steps)
# ---------------------------------------------------------------------------------------------


class OllamaClient(_OllamaRequests, SyncClientBase):
    """Blocking twin of :class:`AsyncOllamaClient` (same calls, same results), plus the
    management calls of the protocol's steps."""

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

    def load(
        self, model: str, options: dict[str, Any] | None = None, keep_alive: float | str = -1
    ) -> LoadResult:
        """Load ``model`` with ``options`` (an empty-prompt generate, as ``ollama run`` does)."""
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
