"""The servers of the conformance matrix, started once for the module that measures them: a
simulated server per shape, the embedded server once per API, llama-cpp-python's server,
llama.cpp's own server; each
at its defaults but for the address it listens on and the name it serves the model under."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from llama_cpp_server import running

from mabench.servers.embedded.launch import ServerProcess
from mabench.servers.embedded.registry import BUILTIN_MODEL, embedded_model_path
from mabench.servers.llama_server import HEALTH_PATH, find_binary
from mabench.servers.net import free_port
from mabench.servers.process import start_logged, stop, wait_answering
from mabench.servers.simulated import SimServerProcess


@pytest.fixture(scope="module")
def sim_servers(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., dict[str, str]]]:
    """Factory of simulated servers by shape, all stopped with the module: ``{shape: url}``
    for the shapes asked for."""
    logs = tmp_path_factory.mktemp("sim")
    started: list[SimServerProcess] = []

    def start(*shapes: str) -> dict[str, str]:
        servers = {s: SimServerProcess(logs, shape=s, ttft_ms=20, token_ms=2) for s in shapes}
        started.extend(servers.values())
        return {s: server.wait_ready(timeout_s=30).url for s, server in servers.items()}

    try:
        yield start
    finally:
        for server in started:
            server.stop()


@pytest.fixture(scope="module")
def embedded_urls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Two embedded servers at their defaults, ``{"ollama": url, "openai": url}``: one per API,
    since a study refuses two names for one server."""
    logs = tmp_path_factory.mktemp("embedded")
    servers = {api: ServerProcess(log_path=logs / f"{api}.log") for api in ("ollama", "openai")}
    try:
        for server in servers.values():
            server.start()
        yield {api: server.wait_ready(timeout=120).url for api, server in servers.items()}
    finally:
        for server in servers.values():
            server.stop()


@pytest.fixture(scope="module")
def llama_cpp_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running(tmp_path_factory.mktemp("llama") / "server.log") as server:
        yield server.url


@pytest.fixture(scope="module")
def llama_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str | None]:
    """llama.cpp's own server (the ``llama-server`` ``make setup`` builds) at its defaults: the
    built-in model under its name, and nothing else set (its slots, threads, context and
    caches are its own). None where it was not built."""
    binary = find_binary("llama-server", Path.cwd())
    if binary is None:
        yield None
        return
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        str(binary),
        *("--model", str(embedded_model_path()), "--alias", BUILTIN_MODEL),
        *("--host", "127.0.0.1", "--port", str(port)),
    ]
    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    proc = start_logged(command, log)
    try:
        wait_answering(proc, url, command=command, log_path=log, timeout_s=120, path=HEALTH_PATH)
        yield url
    finally:
        stop(proc)
