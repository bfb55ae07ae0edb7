"""The servers of the conformance matrix, started once for the module that measures them: a
simulated server per shape, the embedded server once per API, llama-cpp-python's server; each
at its defaults but for the address it listens on and the name it serves the model under."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mabench.servers.embedded.launch import ServerProcess
from mabench.servers.embedded.registry import BUILTIN_MODEL, embedded_model_path
from mabench.servers.net import LOOPBACK, free_port, status_of, wait_until
from mabench.servers.simulated import SimServerProcess
from mabench.servers.supervise import stop as stop_process


class LlamaCppServer:
    """``python -m llama_cpp.server`` on a free port, the bundled GGUF served under the
    embedded server's name for it, at
    its defaults otherwise (no key; a new request interrupts the one streaming)."""

    def __init__(self, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        args = [sys.executable, "-m", "llama_cpp.server", "--model", str(embedded_model_path())]
        args += ["--model_alias", BUILTIN_MODEL, "--host", LOOPBACK, "--port", str(self.port)]
        self.log = log
        with open(log, "wb") as fh:
            self.proc = subprocess.Popen(args, stdout=fh, stderr=subprocess.STDOUT)

    def ready(self) -> bool:
        return self.proc.poll() is None and status_of(self.url, "/v1/models") == 200


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
    server = LlamaCppServer(tmp_path_factory.mktemp("llama") / "server.log")
    try:
        if not wait_until(server.ready, 180, interval_s=0.5):
            pytest.fail(f"llama_cpp.server did not start: {server.log.read_text()[-3000:]}")
        yield server.url
    finally:
        stop_process(server.proc)
