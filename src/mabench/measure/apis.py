"""Which client speaks a server's API: Ollama's native API or the OpenAI API, in one place.

A server's ``api`` (``servers[].api`` in the study) picks the client class; its API key, when
the config names a variable for it, is read from the environment when the client is made and
goes nowhere but the client's request headers. The protocol steps ask here what a server's
API offers: its models (``/api/tags`` or ``/v1/models``) and whether it can unload.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import ExitStack
from typing import Any, TypeGuard

from mabench.config import ServerSpec
from mabench.measure.client import AsyncOllamaClient, OllamaClient, Timeouts
from mabench.measure.openai_client import AsyncOpenAIClient, OpenAIClient

__all__ = [
    "AsyncClient",
    "SyncClient",
    "api_of",
    "async_client",
    "can_unload",
    "inventory",
    "open_sync_clients",
    "sync_client",
]

SyncClient = OllamaClient | OpenAIClient
AsyncClient = AsyncOllamaClient | AsyncOpenAIClient


def sync_client(server: ServerSpec, url: str, timeouts: Timeouts) -> SyncClient:
    """A blocking client for ``server`` at ``url`` (management steps, threads coordinator)."""
    if server.api == "openai":
        return OpenAIClient(url, timeouts, api_key=server.api_key())
    return OllamaClient(url, timeouts)


def async_client(server: ServerSpec, url: str, timeouts: Timeouts) -> AsyncClient:
    """An asyncio client for ``server`` at ``url`` (asyncio coordinator)."""
    if server.api == "openai":
        return AsyncOpenAIClient(url, timeouts, api_key=server.api_key())
    return AsyncOllamaClient(url, timeouts)


def open_sync_clients(
    stack: ExitStack,
    servers: Mapping[str, ServerSpec],
    urls: Mapping[str, str],
    timeouts: Timeouts,
) -> dict[str, SyncClient]:
    """One blocking client per server at ``urls``, closed with ``stack``; a server missing
    from ``servers`` speaks Ollama's API."""
    return {
        name: stack.enter_context(sync_client(servers.get(name, ServerSpec(name)), url, timeouts))
        for name, url in urls.items()
    }


def api_of(client: SyncClient | AsyncClient) -> str:
    return "openai" if isinstance(client, OpenAIClient | AsyncOpenAIClient) else "ollama"


def can_unload(client: SyncClient) -> TypeGuard[OllamaClient]:
    """Whether the server's API can unload a model and list the loaded ones (Ollama's can,
    the OpenAI API has neither)."""
    return isinstance(client, OllamaClient)


def inventory(client: SyncClient) -> tuple[str | None, list[dict[str, Any]]]:
    """The server's version (None where the API has no version call) and its models, as
    ``/api/tags`` entries (an OpenAI model has only a name: no digest, no size)."""
    if isinstance(client, OpenAIClient):
        return None, [{"name": model} for model in client.models()]
    return client.version(), client.tags()
