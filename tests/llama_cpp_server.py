"""llama-cpp-python's own server (``python -m llama_cpp.server``): a real third-party
OpenAI-compatible server on the bundled GGUF, served under the embedded server's name for it.

At its defaults (a prompt cache, one request at a time, a new request interrupting the one
streaming) unless a test passes flags; started on a free port, stopped by :func:`running`."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from mabench.servers.embedded.registry import BUILTIN_MODEL, embedded_model_path
from mabench.servers.net import LOOPBACK, free_port, status_of, wait_until
from mabench.servers.supervise import stop as stop_process

#: how long the server may take to load the model and answer, on a loaded 2-core machine
START_S = 180


class LlamaCppServer:
    """One ``llama_cpp.server`` process; ``flags`` are its command-line options beyond the
    model, its alias and the address (``--api_key`` among them when ``api_key`` is given)."""

    def __init__(self, log: Path, *flags: str, api_key: str | None = None) -> None:
        self.port = free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        self.api_key = api_key
        args = [sys.executable, "-m", "llama_cpp.server", "--model", str(embedded_model_path())]
        args += ["--model_alias", BUILTIN_MODEL, "--host", LOOPBACK, "--port", str(self.port)]
        args += [*flags, *(("--api_key", api_key) if api_key else ())]
        self.log = log
        with open(log, "wb") as fh:
            self.proc = subprocess.Popen(args, stdout=fh, stderr=subprocess.STDOUT)

    def ready(self) -> bool:
        headers = {"authorization": f"Bearer {self.api_key}"} if self.api_key else None
        return self.proc.poll() is None and status_of(self.url, "/v1/models", headers) == 200


@contextmanager
def running(log: Path, *flags: str, api_key: str | None = None) -> Iterator[LlamaCppServer]:
    """A started server, answering; stopped on exit (the test fails if it never answers)."""
    server = LlamaCppServer(log, *flags, api_key=api_key)
    try:
        if not wait_until(server.ready, START_S, interval_s=0.5):
            pytest.fail(f"llama_cpp.server did not start: {server.log.read_text()[-3000:]}")
        yield server
    finally:
        stop_process(server.proc)
