"""Shared fixtures: simulated servers with known timing, started as real processes."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mabench.servers.simulated import SimServerProcess

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def sim_server(tmp_path: Path) -> Iterator[Callable[..., SimServerProcess]]:
    """Factory: ``sim_server(ttft_ms=100, token_ms=10, mode="serialized", fault="hang")``."""
    started: list[SimServerProcess] = []

    def start(**settings: object) -> SimServerProcess:
        server = SimServerProcess(tmp_path, **settings)
        started.append(server)
        return server.wait_ready(timeout_s=20)

    yield start
    for server in started:
        server.stop()


FAKE_OLLAMA = """#!{python}
# Test stand-in for the `ollama` binary: `ollama serve` runs the simulated server on
# OLLAMA_HOST, so the ollama backend (command, environment, lifecycle) runs for real on
# machines without Ollama. FAKE_OLLAMA_ARGS adds sim-serve options (timing, faults).
import os, sys
if sys.argv[1:] != ["serve"]:
    sys.exit(f"fake ollama: only 'serve' is supported, got {{sys.argv[1:]}}")
host, _, port = os.environ.get("OLLAMA_HOST", "127.0.0.1:11434").rpartition(":")
args = [sys.executable, "-m", "mabench", "sim-serve", "--host", host, "--port", port]
os.execv(sys.executable, args + os.environ.get("FAKE_OLLAMA_ARGS", "").split())
"""


@pytest.fixture(scope="session")
def fake_ollama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path of an executable `ollama` stand-in (see FAKE_OLLAMA)."""
    path = tmp_path_factory.mktemp("bin") / "ollama"
    path.write_text(FAKE_OLLAMA.format(python=sys.executable))
    path.chmod(0o755)
    return path
