"""Start a server process with its log, wait until it answers, stop it.

Every server this project starts (the embedded server, the simulated one, Ollama, each under
the pool's watchdog or not) is started the same way: :func:`start_logged` runs the command
with its output appended to a log (after a line saying what was started, and when), and
:func:`wait_answering` polls ``GET <url><path>`` until it answers 200, the process exits or a
deadline passes. A server that does not come up is a :class:`ServerStartError` naming the
command, the URL, the exit status (or the time waited) and the log's last lines. :func:`stop`
ends a process: SIGTERM, then SIGKILL after a grace period.
"""

from __future__ import annotations

import shlex
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

from mabench.servers.net import status_of

__all__ = ["GRACE_S", "ServerStartError", "start_logged", "stop", "wait_answering"]

#: how many of the log's last lines a start-up error quotes
LOG_TAIL_LINES = 20
#: seconds a process has to end after SIGTERM before it is killed
GRACE_S = 5.0


class ServerStartError(RuntimeError):
    """A server process that could not be started, exited before it answered, or did not
    answer in time (the pool raises it as a :class:`~mabench.measure.errors.ServerSetupError`;
    this module imports nothing but the standard library and :mod:`mabench.servers.net`, so
    that the watchdog, which stops its server with :func:`stop`, starts light)."""


def start_logged(
    command: Sequence[str],
    log_path: Path | None,
    *,
    env: Mapping[str, str] | None = None,
    new_session: bool = False,
) -> subprocess.Popen[bytes]:
    """Run ``command`` with stdin closed and stdout and stderr appended to ``log_path`` (its
    folder made; without a log, the output is discarded). ``env`` is the whole environment
    (default: this process's); ``new_session``: the process leads a session of its own, so a
    signal to this process's group does not reach it."""
    if log_path is None:
        return _popen(command, subprocess.DEVNULL, env, new_session)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        started = time.strftime("%Y-%m-%dT%H:%M:%S")
        log.write(f"\n# {started} starting: {shlex.join(command)}\n".encode())
        log.flush()
        return _popen(command, log, env, new_session)


def _popen(
    command: Sequence[str], out: int | IO[bytes], env: Mapping[str, str] | None, new_session: bool
) -> subprocess.Popen[bytes]:
    try:
        return subprocess.Popen(
            list(command),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            start_new_session=new_session,
        )
    except OSError as exc:
        raise ServerStartError(
            f"cannot start {shlex.join(command)}: {exc}; is {command[0]} installed and executable?"
        ) from None


def wait_answering(
    proc: subprocess.Popen[bytes],
    url: str,
    *,
    command: Sequence[str],
    log_path: Path | None,
    timeout_s: float,
    path: str = "/",
    interval_s: float = 0.05,
    name: str = "server",
) -> None:
    """Return once ``GET <url><path>`` answers 200; raise :class:`ServerStartError` when
    ``proc`` exits first or ``timeout_s`` passes (the process is left as it is: the caller
    stops it). ``command`` and ``name`` only word the error."""
    deadline = time.monotonic() + timeout_s
    while True:
        code = proc.poll()
        if code is not None:
            raise _start_error(name, command, url, f"exited with code {code}", log_path)
        if status_of(url, path, timeout_s=1.0) == 200:
            return
        if time.monotonic() >= deadline:
            why = f"did not answer GET {path} within {timeout_s:g} s"
            raise _start_error(name, command, url, why, log_path)
        time.sleep(interval_s)


def _start_error(
    name: str, command: Sequence[str], url: str, why: str, log_path: Path | None
) -> ServerStartError:
    return ServerStartError(f"{name} at {url} ({shlex.join(command)}) {why}{_log_tail(log_path)}")


def _log_tail(log_path: Path | None, lines: int = LOG_TAIL_LINES) -> str:
    """``; last lines of <log>:`` and those lines, as an error ends with them."""
    if log_path is None:
        return " (its output was discarded: give it a log to see why)"
    try:
        text = log_path.read_text(errors="replace").splitlines()[-lines:]
    except OSError as exc:
        return f"; its log {log_path} cannot be read ({exc.strerror})"
    return f"; last lines of {log_path}:\n" + "\n".join(text)


def stop(proc: subprocess.Popen[bytes], grace_s: float = GRACE_S) -> int:
    """SIGTERM, then SIGKILL after ``grace_s``; the exit status (at once if it had ended)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode
