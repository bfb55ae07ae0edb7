"""What every client shares, whatever the API: the server, the timeouts, the request headers,
the timed connection of the streamed calls, and httpx for the blocking management calls.

:class:`AsyncClientBase` (the asyncio coordinator: streamed calls only) and
:class:`SyncClientBase` (the threads coordinator and the protocol's management steps: streamed
calls and JSON calls) add the connection; an API's client (:mod:`mabench.measure.client`,
:mod:`mabench.measure.openai_client`) adds its requests and parsers on top of one of them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Self

import httpx

from mabench.measure.errors import (
    ProtocolError,
    ServerCallError,
    ServerConnectError,
    ServerHTTPError,
    ServerTimeoutError,
)
from mabench.measure.transport import AsyncConnection, SyncConnection, error_message

__all__ = ["AsyncClientBase", "ClientBase", "SyncClientBase", "Timeouts"]


@dataclass(frozen=True)
class Timeouts:
    """The config's ``timeouts``: ``request_s`` the longest wait for an answer (a first token
    may queue behind other agents' calls), ``read_s`` the longest silence between two chunks
    once a streamed answer has begun (a stall mid-stream; never more than ``request_s``)."""

    connect_s: float = 10.0
    request_s: float = 300.0
    load_s: float = 600.0
    read_s: float = 60.0

    def httpx(self, read_s: float) -> httpx.Timeout:
        return httpx.Timeout(connect=self.connect_s, read=read_s, write=self.connect_s, pool=None)


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


class ClientBase:
    """The server, the timeouts and the request headers (an API key) of one client."""

    def __init__(
        self, base_url: str, timeouts: Timeouts | None, headers: dict[str, str] | None = None
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeouts = timeouts or Timeouts()
        self.headers = dict(headers or {})


class AsyncClientBase(ClientBase):
    """The asyncio side: one :class:`~mabench.measure.transport.AsyncConnection` for the
    streamed calls. Use as ``async with Client(url) as c``."""

    def __init__(
        self, base_url: str, timeouts: Timeouts | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(base_url, timeouts, headers)
        self._conn = AsyncConnection(
            self.base_url,
            self.timeouts.connect_s,
            self.timeouts.request_s,
            self.headers,
            stall_s=self.timeouts.read_s,
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._conn.aclose()


class SyncClientBase(ClientBase):
    """The blocking side: one :class:`~mabench.measure.transport.SyncConnection` for the
    streamed calls, and an ``httpx.Client``, made on first use, for the JSON calls of the
    management steps (check, load, unload, loaded models)."""

    def __init__(
        self, base_url: str, timeouts: Timeouts | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(base_url, timeouts, headers)
        self._conn = SyncConnection(
            self.base_url,
            self.timeouts.connect_s,
            self.timeouts.request_s,
            self.headers,
            stall_s=self.timeouts.read_s,
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

    def _httpx_options(self) -> dict[str, Any]:
        return {
            "base_url": self.base_url,
            "timeout": self.timeouts.httpx(self.timeouts.request_s),
            # a plain-http server needs no CA bundle (loading it costs ~40 ms of CPU)
            "verify": self.base_url.startswith("https:"),
            "headers": self.headers,
        }

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
