"""Start, find and stop an invocation's job host (see :mod:`mabench.jobs.host`)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

from mabench.jobs.request import STOP, address

READY_TIMEOUT_S = 30.0


def answers(where: str) -> bool:
    """Whether a host listens at ``where`` (a probe: connect, then close)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(where)
        except (FileNotFoundError, ConnectionRefusedError):
            return False
    return True


def ensure_host(owner_pid: int, owner_create_time: float, log_path: Path) -> bool:
    """Start the owner's job host unless one listens; wait until it does. False (and the
    reason in ``log_path``) if it did not come up: jobs then run in their own processes."""
    where = address(owner_pid)
    if where is None:
        return False
    if answers(where):
        return True
    cmd = [
        sys.executable,
        "-m",
        "mabench.servers.supervise",
        "--owner-pid",
        str(owner_pid),
        "--owner-ctime",
        repr(owner_create_time),
        "--",
        sys.executable,
        "-m",
        "mabench.jobs.host",
        "--owner-pid",
        str(owner_pid),
    ]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline and proc.poll() is None:
        if answers(where):
            return True
        time.sleep(0.02)
    return answers(where)


def stop_host(owner_pid: int) -> bool:
    """Ask the owner's job host to stop (after its running jobs); False if none listens."""
    where = address(owner_pid)
    if where is None:
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(where)
        except (FileNotFoundError, ConnectionRefusedError):
            return False
        sock.sendall(STOP)
    return True
