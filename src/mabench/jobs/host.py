"""The job host: one process per invocation and machine that has imported the steps and
forks a child per rule job.

``python -m mabench.jobs.host --owner-pid PID`` listens at :func:`mabench.jobs.request.address`
of its owner, under the :mod:`mabench.servers.supervise` watchdog (it dies with its owner, as
the servers do). For each connection: the client's standard streams (passed as file
descriptors) and its :class:`~mabench.jobs.request.JobRequest`; a forked child takes the
client's streams, working directory and environment, runs the step, and exits; the host
reports the child's exit status. A client that goes away (Snakemake killed its job, or
Ctrl-C) takes its child with it: SIGINT, then SIGKILL after a grace period.

The host is single-threaded (a fork copies only the calling thread: a lock held by another
thread would stay locked in the child forever), so it waits on every socket and child at
once with ``select`` and pidfds. Only processes of the host's own user are served.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import select
import signal
import socket
import struct
import sys
import time
import traceback
from dataclasses import dataclass
from typing import NoReturn

from mabench.jobs import steps
from mabench.jobs.client import STANDARD_STREAMS, read_message
from mabench.jobs.request import STOP, JobRequest, address, frame

GRACE_S = 5.0
#: how long a client has to send its request once connected
REQUEST_TIMEOUT_S = 10.0


@dataclass
class Child:
    """A job's process and the connection of the client waiting for it."""

    pid: int
    pidfd: int
    conn: socket.socket
    kind: str
    kill_at: float | None = None


def _say(message: str) -> None:
    print(f"mabench.jobs.host[{os.getpid()}]: {message}", file=sys.stderr, flush=True)


def _peer_uid(conn: socket.socket) -> int:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


class StopRequested(Exception):
    """A client asked the host to stop (the invocation released its servers)."""


def receive(conn: socket.socket) -> tuple[JobRequest, list[int]] | None:
    """The client's request and standard streams; None for a probe (connect, then close).
    Raises :class:`StopRequested` for a stop request."""
    conn.settimeout(REQUEST_TIMEOUT_S)
    marker, fds, _, _ = socket.recv_fds(conn, 1, len(STANDARD_STREAMS))
    if not fds:
        if marker == STOP:
            raise StopRequested
        return None
    if len(fds) != len(STANDARD_STREAMS):
        for fd in fds:
            os.close(fd)
        raise ValueError(f"expected {len(STANDARD_STREAMS)} file descriptors, got {len(fds)}")
    message = read_message(conn)
    if message is None:
        for fd in fds:
            os.close(fd)
        return None
    conn.settimeout(None)
    return JobRequest(**message), fds


def run_child(request: JobRequest, fds: list[int], keep: list[int]) -> NoReturn:
    """In the forked child: become the client's process, run the step, exit with its status.
    ``keep``: the host's descriptors to close first (its sockets and other children's)."""
    status = 1
    try:
        for fd in keep:
            os.close(fd)
        # as in a fresh interpreter: Ctrl-C raises KeyboardInterrupt, SIGTERM ends the process
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for sig in (signal.SIGTERM, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        for target, fd in zip(STANDARD_STREAMS, fds, strict=True):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request.cwd)
        os.environ.clear()
        os.environ.update(request.env)
        steps.run(request)
        status = 0
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        os._exit(status)  # never the host's atexit handlers or finalizers


class Host:
    """The select loop: accept jobs, fork them, report their exits, reap orphans."""

    def __init__(self, listener: socket.socket) -> None:
        self.listener = listener
        self.children: dict[int, Child] = {}  # by pidfd

    def serve_forever(self) -> None:
        while True:
            self.serve_once(timeout_s=1.0)

    def serve_once(self, timeout_s: float) -> None:
        # a client's end is watched until it is found gone (EOF stays readable)
        waiting = {c.conn.fileno(): c for c in self.children.values() if c.kill_at is None}
        watched = [self.listener.fileno(), *self.children, *waiting]
        readable = set(select.select(watched, [], [], timeout_s)[0])
        for pidfd in readable & set(self.children):  # exits first: their sockets close
            child = self.children.pop(pidfd)
            waiting.pop(child.conn.fileno(), None)
            self.report_exit(child)
        for fd in readable & set(waiting):
            self.client_gone(waiting[fd])
        if self.listener.fileno() in readable:
            self.accept()
        self.kill_overdue()

    def accept(self) -> None:
        conn, _ = self.listener.accept()
        try:
            if _peer_uid(conn) != os.getuid():
                _say("refused a connection from another user")
                conn.close()
                return
            received = receive(conn)
        except (OSError, ValueError) as exc:
            _say(f"refused a malformed job: {exc}")
            conn.close()
            return
        if received is None:
            conn.close()
            return
        request, fds = received
        sys.stdout.flush()
        sys.stderr.flush()
        keep = [self.listener.fileno(), conn.fileno()]
        for child in self.children.values():
            keep += [child.pidfd, child.conn.fileno()]
        pid = os.fork()
        if pid == 0:
            run_child(request, fds, keep)
        for fd in fds:
            os.close(fd)
        pidfd = os.pidfd_open(pid)
        self.children[pidfd] = Child(pid, pidfd, conn, request.kind)
        _say(f"{request.kind} job {pid}: {' '.join(request.wildcards.values())}")

    def report_exit(self, child: Child) -> None:
        _, wait_status = os.waitpid(child.pid, 0)
        os.close(child.pidfd)
        status = os.waitstatus_to_exitcode(wait_status)
        with contextlib.suppress(OSError):  # a client that is gone waits for nothing
            child.conn.sendall(frame({"exit": status}))
        child.conn.close()

    def client_gone(self, child: Child) -> None:
        """The client closed its end while its job runs (Ctrl-C, or Snakemake killed the
        job): interrupt the job as Ctrl-C would have (KeyboardInterrupt: partial files are
        removed, no failure report), and kill it if it is still there after a grace period."""
        if child.kill_at is None:
            _say(f"the client of {child.kind} job {child.pid} is gone; interrupting it")
            os.kill(child.pid, signal.SIGINT)
            child.kill_at = time.monotonic() + GRACE_S

    def kill_overdue(self) -> None:
        now = time.monotonic()
        for child in self.children.values():
            if child.kill_at is not None and now >= child.kill_at:
                os.kill(child.pid, signal.SIGKILL)
                child.kill_at = float("inf")

    def stop_children(self) -> None:
        """The host is stopping: end every job still running (SIGTERM, then SIGKILL)."""
        for child in self.children.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + GRACE_S
        for child in self.children.values():
            while not _reaped(child.pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if not _reaped(child.pid):
                os.kill(child.pid, signal.SIGKILL)


def _reaped(pid: int) -> bool:
    try:
        return os.waitpid(pid, os.WNOHANG) != (0, 0)
    except ChildProcessError:
        return True


def can_watch_children() -> bool:
    """Whether children can be waited for with ``select`` (pidfds: Linux 5.3 and later)."""
    try:
        os.close(os.pidfd_open(os.getpid()))
    except (AttributeError, OSError):
        return False
    return True


def listen(where: str) -> socket.socket | None:
    """A listening socket at ``where``; None if another host already listens there."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(where)
    except OSError:
        sock.close()
        return None
    sock.listen(16)
    return sock


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mabench.jobs.host", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--owner-pid", type=int, required=True)
    args = parser.parse_args(argv)
    where = address(args.owner_pid)
    if where is None:
        _say(f"owner {args.owner_pid} is gone")
        return 1
    if not can_watch_children():
        _say("this kernel has no pidfd_open (Linux < 5.3): jobs run in their own processes")
        return 1
    listener = listen(where)
    if listener is None:
        _say("another host already serves this owner")
        return 0
    host = Host(listener)
    # Everything imported so far lives as long as the host: out of the collector's sight, a
    # child's collections walk only what its job creates (shorter pauses while it measures)
    # and never touch, so never copy, the pages it shares with the host.
    gc.freeze()

    def on_signal(signum: int, _frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    _say(f"serving the jobs of owner {args.owner_pid}")
    try:
        host.serve_forever()
    except StopRequested:
        _say("asked to stop")
    finally:
        host.stop_children()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
