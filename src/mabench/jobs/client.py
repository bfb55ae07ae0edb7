"""A rule script's side: hand the job to this invocation's job host, or run it here.

Imports only the standard library and :mod:`mabench.servers.ownership`: this module is what a
rule script pays for at start-up when a host runs its job.
"""

from __future__ import annotations

import json
import socket
import sys

from mabench.jobs.request import HEADER_SIZE, JobRequest, address, frame_length
from mabench.servers.ownership import claimed_owner_pid

#: the job's standard input, output and error: the host's child writes where the script would
STANDARD_STREAMS = (0, 1, 2)


class JobHostError(RuntimeError):
    """The job host ended, or broke the protocol, before it reported the job's exit."""


def run_job(request: JobRequest) -> None:
    """Run a rule's job: in this invocation's job host if one listens, else in this process
    (which then starts a host for the jobs after it). Exits with the job's status."""
    owner = claimed_owner_pid()
    where = address(owner) if owner is not None else None
    status = forward(request, where) if where is not None else None
    if status is None:
        # No host: run the step here, paying the imports the host would have saved (lazy on
        # purpose: importing the steps is what a job in the host does not pay).
        from mabench.jobs import steps

        steps.run(request)
        steps.start_host_for_later_jobs(request)
        return
    if status < 0:
        print(f"mabench: the job's process was killed by signal {-status}", file=sys.stderr)
        raise SystemExit(128 - status)
    if status:
        raise SystemExit(status)


def forward(request: JobRequest, where: str) -> int | None:
    """Run ``request`` in the job host at ``where`` with this process's standard streams and
    wait for it: the exit status of the job's process (negative: killed by that signal), or
    None when no host listens there."""
    payload = request.encode()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(where)
    except (FileNotFoundError, ConnectionRefusedError):
        sock.close()
        return None
    with sock:
        try:
            socket.send_fds(sock, [b"J"], list(STANDARD_STREAMS))
            sock.sendall(payload)
            reply = read_message(sock)
        except (BrokenPipeError, ConnectionResetError):
            reply = None  # the host closed the connection: it refused the job or ended
    if reply is None or not isinstance(reply.get("exit"), int):
        raise JobHostError(
            f"the job host refused the {request.kind} job or ended before it reported its exit; its "
            "log is under results/<study>/logs/servers/<host>/jobs.log. Run the job again "
            "(the next job starts a new host)."
        )
    return reply["exit"]


def read_message(sock: socket.socket) -> dict | None:
    """One framed JSON message, or None at end of stream."""
    header = _read_exactly(sock, HEADER_SIZE)
    if header is None:
        return None
    body = _read_exactly(sock, frame_length(header))
    return None if body is None else json.loads(body)


def _read_exactly(sock: socket.socket, n: int) -> bytes | None:
    chunks = []
    while n:
        chunk = sock.recv(min(n, 1 << 16))
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)
