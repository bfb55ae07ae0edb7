"""Which client speaks a server's API: Ollama's native API or the OpenAI API, in one place.

A server's ``api`` (``servers[].api`` in the study) picks the client of the measured calls;
its API key, when the config names a variable for it, is read from the environment when the
client is made and goes nowhere but the client's request headers.

The protocol's steps before the measurement (check, forced unload, load) use Ollama's API
wherever the server speaks it: servers measured through it, and servers the pipeline started
(the embedded server and Ollama serve it beside ``/v1``). Only a server that speaks nothing
but the OpenAI API (an external vLLM, llama.cpp server, ...) goes through that API there too:
its models from ``/v1/models``, no unload and no list of loaded models
(:func:`can_unload`), a one-token completion as its load.
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
    "async_client",
    "can_unload",
    "inventory",
    "management_client",
    "open_management_clients",
    "speaks_ollama",
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


def speaks_ollama(server: ServerSpec, backend: str) -> bool:
    """Whether the server answers Ollama's API: it is measured through it, or the pipeline
    started it (``embedded`` or ``ollama`` backend), which serves it beside ``/v1``."""
    return server.api == "ollama" or backend in ("embedded", "ollama")


def management_client(server: ServerSpec, url: str, timeouts: Timeouts, backend: str) -> SyncClient:
    """The client of the protocol's check, forced unload and load for ``server``."""
    if speaks_ollama(server, backend):
        return OllamaClient(url, timeouts)
    return sync_client(server, url, timeouts)


def open_management_clients(
    stack: ExitStack,
    servers: Mapping[str, ServerSpec],
    urls: Mapping[str, str],
    timeouts: Timeouts,
    backend: str,
) -> dict[str, SyncClient]:
    """One :func:`management_client` per server at ``urls``, closed with ``stack``; a server
    missing from ``servers`` speaks Ollama's API."""
    return {
        name: stack.enter_context(
            management_client(servers.get(name, ServerSpec(name)), url, timeouts, backend)
        )
        for name, url in urls.items()
    }


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
