"""Forced unloads: every model on every server is unloaded and the emptiness verified via /api/ps.

A server whose API has neither an unload nor a list of loaded models (the OpenAI API) is not
unloaded and not checked; it is named in :attr:`Isolation.unavailable` instead, so the run
record and the report say so rather than pretending.

:func:`loaded_entries` says what the servers that list their loaded models hold now (names and
context lengths), for the checks after the measured phases.

A server of Ollama's API without ``/api/ps`` (Ollama before v0.1.38) is refused with a
:class:`~mabench.measure.errors.ServerSetupError` naming it: without that list nothing can be
unloaded or verified, so no run is measured on it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgspec

from mabench.measure.apis import SyncClient, can_unload
from mabench.measure.client import OllamaClient
from mabench.measure.errors import RunFailed, ServerCallError, ServerHTTPError, ServerSetupError
from mabench.measure.records import Isolation, PsModel

#: /api/ps polls after an unload: 5 ms, doubling up to 100 ms (a poll costs a local server
#: about 1 ms; a server that unloads in 20 ms is seen empty after ~35 ms, not 100 ms)
POLL_FIRST_S = 0.005
POLL_MAX_S = 0.1


def listed(name: str, client: OllamaClient) -> list[dict[str, Any]]:
    """Server ``name``'s ``/api/ps`` entries; a :class:`ServerSetupError` naming the server
    where it has no such route (HTTP 404)."""
    try:
        return client.ps()
    except ServerHTTPError as exc:
        if exc.status != 404:
            raise
        raise ServerSetupError(
            f"server {name!r} at {client.base_url} has no /api/ps (HTTP 404; Ollama added it "
            "in v0.1.38): the forced unload can neither list nor verify what it holds, so no "
            "run is measured on it. Upgrade the server, or measure it through its OpenAI API "
            "(servers[].api: openai), which has no unload and is recorded as such"
        ) from None


def loaded_models(clients: Mapping[str, OllamaClient]) -> dict[str, list[str]]:
    return {
        name: sorted(str(m.get("name") or m.get("model")) for m in listed(name, c))
        for name, c in clients.items()
    }


def _ps_model(entry: dict) -> PsModel:
    context = entry.get("context_length")
    return PsModel(
        name=str(entry.get("name") or entry.get("model")),
        context_length=context if type(context) is int else None,
    )


def loaded_entries(clients: Mapping[str, SyncClient], step: str) -> dict[str, list[PsModel]]:
    """Each server's /api/ps: the models it holds now, with their context length; a server
    whose API lists no loaded models (the OpenAI API) is left out."""
    try:
        return {
            name: sorted((_ps_model(m) for m in listed(name, c)), key=lambda p: p.name)
            for name, c in clients.items()
            if can_unload(c)
        }
    except ServerCallError as exc:
        info = exc.info()
        raise RunFailed(
            f"/api/ps failed on {exc.url}: {exc.message}",
            msgspec.structs.replace(info, phase=step),
        ) from exc


def force_unload(clients: Mapping[str, SyncClient], verify_timeout_s: float = 30.0) -> Isolation:
    """Unload every loaded model on every server that can, then poll /api/ps until all are
    empty; the servers that cannot are listed as unavailable.

    Ollama may list a model for a moment after a keep_alive=0 request returns, so emptiness
    is polled for up to ``verify_timeout_s`` before the isolation is declared failed.
    """
    unloadable = {n: c for n, c in clients.items() if can_unload(c)}
    unavailable = sorted(set(clients) - set(unloadable))
    return _unload_and_verify(unloadable, verify_timeout_s, unavailable)


def unload_everywhere(clients: Mapping[str, OllamaClient], loaded: Mapping[str, list[str]]) -> None:
    """Unload what each server holds: servers at the same time, one thread each (an unload
    frees a model and collects the server's garbage: ~80 ms for SmolLM2), each server's
    models one after another."""
    busy = {name: models for name, models in loaded.items() if models}
    if not busy:
        return
    with ThreadPoolExecutor(max_workers=len(busy), thread_name_prefix="unload") as pool:
        futures = [
            pool.submit(lambda n=name, ms=models: [clients[n].unload(m) for m in ms])
            for name, models in busy.items()
        ]
    for future in futures:
        future.result()  # the first server's error, as when they ran one after another


def _unload_and_verify(
    clients: Mapping[str, OllamaClient], verify_timeout_s: float, unavailable: list[str]
) -> Isolation:
    try:
        before = loaded_models(clients)
        unload_everywhere(clients, before)
        deadline = time.monotonic() + verify_timeout_s
        after = loaded_models(clients)
        pause_s = POLL_FIRST_S
        while any(after.values()) and time.monotonic() < deadline:
            time.sleep(pause_s)
            pause_s = min(2 * pause_s, POLL_MAX_S)
            after = loaded_models(clients)
    except ServerCallError as exc:
        info = exc.info()
        raise RunFailed(
            f"forced unload failed on {exc.url}: {exc.message}",
            msgspec.structs.replace(info, phase="unload"),
        ) from exc
    return Isolation(
        loaded_before=before,
        loaded_after=after,
        verified=not any(after.values()),
        unavailable=unavailable,
    )
