"""Shared fixtures: simulated servers with known timing, started as real processes."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from mabench.net import free_port, wait_until

ROOT = Path(__file__).resolve().parents[1]


class SimServer:
    """A `mabench sim-serve` process on a free loopback port."""

    def __init__(self, log_dir: Path, **settings: object) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [sys.executable, "-m", "mabench", "sim-serve", "--port", str(self.port)]
        for key, value in settings.items():
            args += [f"--{key.replace('_', '-')}", str(value)]
        self.log = log_dir / f"sim-{self.port}.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        if not wait_until(self._answers, timeout_s=20):
            self.stop()
            raise RuntimeError(f"sim server did not start: {self.log.read_text()}")

    def _answers(self) -> bool:
        if self.proc.poll() is not None:
            return False
        try:
            return httpx.get(self.url + "/", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def sim_server(tmp_path: Path) -> Iterator[Callable[..., SimServer]]:
    """Factory: ``sim_server(ttft_ms=100, token_ms=10, mode="serialized", fault="hang")``."""
    started: list[SimServer] = []

    def start(**settings: object) -> SimServer:
        server = SimServer(tmp_path, **settings)
        started.append(server)
        return server

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
