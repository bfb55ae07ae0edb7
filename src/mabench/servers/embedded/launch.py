"""Start ``python -m mabench.servers.embedded`` as a subprocess: for tests and the benchmark.

    with ServerProcess(args=["--num-thread", "1"], log_path="server.log") as server:
        ollama.Client(host=server.url).list()

The port is chosen free unless given; the process is started and waited for as every server
is (:mod:`mabench.servers.process`): ``wait_ready`` polls ``GET /`` until the server answers
and fails early, with the log's tail, if the process dies; ``stop`` sends SIGTERM, then
SIGKILL after ``timeout`` seconds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from mabench.servers.net import LOOPBACK, free_port
from mabench.servers.process import start_logged, wait_answering
from mabench.servers.process import stop as stop_process

__all__ = ["ServerProcess"]


class ServerProcess:
    """One embedded server in a child process.

    ``args`` are extra command-line flags (``--model``, ``--num-thread``, ...); ``env`` is
    added to this process's environment; stderr and stdout go to ``log_path`` (appended) or,
    without one, are discarded.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        host: str = LOOPBACK,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        log_path: str | os.PathLike[str] | None = None,
        python: str = sys.executable,
    ) -> None:
        self.host = host
        self.port = port if port is not None else free_port(host if host != "0.0.0.0" else LOOPBACK)
        self.args = list(args)
        self.env = dict(env or {})
        self.log_path = Path(log_path) if log_path is not None else None
        self.python = python
        self._proc: subprocess.Popen[bytes] | None = None

    # -- properties --------------------------------------------------------------------------

    @property
    def url(self) -> str:
        host = LOOPBACK if self.host in ("0.0.0.0", "") else self.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("the server is not started")
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def command(self) -> list[str]:
        return [
            self.python,
            "-m",
            "mabench.servers.embedded",
            "--host",
            self.host,
            "--port",
            str(self.port),
            *self.args,
        ]

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> ServerProcess:
        if self._proc is not None:
            raise RuntimeError("the server was already started")
        env = {**os.environ, **self.env}
        self._proc = start_logged(self.command, self.log_path, env=env)
        return self

    def wait_ready(self, timeout: float = 60.0) -> ServerProcess:
        """Poll ``GET /`` until the server answers; a
        :class:`~mabench.servers.process.ServerStartError` (with the log's last lines) if it
        exits first or ``timeout`` passes."""
        if self._proc is None:
            raise RuntimeError("start() the server first")
        wait_answering(
            self._proc,
            self.url,
            command=self.command,
            log_path=self.log_path,
            timeout_s=timeout,
            name="embedded server",
        )
        return self

    def send_signal(self, sig: int) -> None:
        """Send ``sig`` to the server if it is running."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(sig)

    def terminate(self) -> None:
        """Send SIGTERM and return at once (``stop`` also waits)."""
        self.send_signal(signal.SIGTERM)

    def wait(self, timeout: float | None = None) -> int:
        if self._proc is None:
            raise RuntimeError("the server is not started")
        return self._proc.wait(timeout)

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout`` s. Returns the exit code."""
        return None if self._proc is None else stop_process(self._proc, timeout)

    def __enter__(self) -> ServerProcess:
        self.start()
        try:
            return self.wait_ready()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running() else f"exit {self.returncode}"
        return f"ServerProcess({self.url}, pid={self._proc.pid if self._proc else None}, {state})"
