"""Start ``python -m mabench.servers.embedded`` as a subprocess: for tests and the benchmark.

    with ServerProcess(args=["--num-thread", "1"], log_path="server.log") as server:
        ollama.Client(host=server.url).list()

The port is chosen free unless given; ``wait_ready`` polls ``GET /`` until the server answers
(and fails early, with the log's tail, if the process dies); ``stop`` sends SIGTERM, then
SIGKILL after ``timeout`` seconds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

import httpx

from mabench.servers.net import LOOPBACK, free_port

__all__ = ["ServerProcess", "ServerStartError"]


class ServerStartError(RuntimeError):
    """The server process exited or did not answer in time."""


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
        self._log: IO[bytes] | None = None

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
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(self.log_path, "ab")  # noqa: SIM115 (closed by stop())
        out = self._log if self._log is not None else subprocess.DEVNULL
        self._proc = subprocess.Popen(
            self.command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            env={**os.environ, **self.env},
        )
        return self

    def wait_ready(self, timeout: float = 60.0) -> ServerProcess:
        """Poll ``GET /`` until it says "Ollama is running"."""
        if self._proc is None:
            raise RuntimeError("start() the server first")
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0) as client:
            while True:
                code = self._proc.poll()
                if code is not None:
                    raise ServerStartError(
                        f"the server exited with code {code} before it was ready{self._log_tail()}"
                    )
                try:
                    r = client.get(self.url + "/")
                    if r.status_code == 200 and "Ollama is running" in r.text:
                        return self
                except httpx.HTTPError:
                    pass
                if time.monotonic() >= deadline:
                    raise ServerStartError(
                        f"the server at {self.url} did not answer within {timeout:.0f} s"
                        f"{self._log_tail()}"
                    )
                time.sleep(0.05)

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
        proc = self._proc
        if proc is None:
            return None
        try:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            return proc.returncode
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None

    def __enter__(self) -> ServerProcess:
        self.start()
        try:
            return self.wait_ready()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _log_tail(self, lines: int = 20) -> str:
        if self.log_path is None or not self.log_path.exists():
            return " (no log file; pass log_path to see the server's output)"
        if self._log is not None:
            self._log.flush()
        text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return f"; last lines of {self.log_path}:\n" + "\n".join(text)

    def __repr__(self) -> str:
        state = "running" if self.running() else f"exit {self.returncode}"
        return f"ServerProcess({self.url}, pid={self._proc.pid if self._proc else None}, {state})"
