"""Fixtures for the embedded server: real processes, the real model, free ports."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import ollama
import pytest

from mabench.servers.embedded.launch import ServerProcess
from mabench.servers.embedded.registry import embedded_model_path


@pytest.fixture(scope="session")
def model_path() -> Path:
    return embedded_model_path()


@pytest.fixture(scope="session")
def server_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("server-logs")


@pytest.fixture(scope="session")
def embedded_server(server_logs: Path, model_path: Path) -> Iterator[ServerProcess]:
    """One shared server for the tests that do not disturb each other.

    Also registers the same GGUF as ``tiny`` (so as ``tiny:latest``) to exercise user models.
    """
    with ServerProcess(
        args=["--num-thread", "1", "--model", f"tiny={model_path}"],
        log_path=server_logs / "shared.log",
    ) as server:
        yield server


@pytest.fixture
def client(embedded_server: ServerProcess) -> Iterator[ollama.Client]:
    with ollama.Client(host=embedded_server.url, timeout=120) as c:
        yield c


@pytest.fixture
def http(embedded_server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=embedded_server.url, timeout=120) as c:
        yield c


@pytest.fixture
def start_server(server_logs: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Start extra servers (own flags); all are stopped at the end of the test."""
    started: list[ServerProcess] = []

    def start(*args: str, ready: bool = True, name: str = "extra") -> ServerProcess:
        server = ServerProcess(args=list(args), log_path=server_logs / f"{name}.log")
        started.append(server)
        server.start()
        if ready:
            server.wait_ready(60)
        return server

    yield start
    for server in started:
        server.stop(timeout=5)
