"""A watchdog that runs one server process and never lets it outlive its owner.

``python -m mabench.servers.supervise --owner-pid PID --owner-ctime T -- CMD...`` starts ``CMD`` and
stops it (SIGTERM, then SIGKILL after a grace period) as soon as the owner process (the
Snakemake invocation or ``mabench run``) is gone, however it ended: success, failure, Ctrl-C
or ``kill -9``. It also stops the server when it receives SIGTERM/SIGINT itself, and exits
with the server's exit code when the server ends on its own.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time

import psutil

from mabench.servers.process import stop

POLL_S = 0.2


def owner_alive(pid: int, create_time: float) -> bool:
    try:
        proc = psutil.Process(pid)
        return (
            abs(proc.create_time() - create_time) < 0.01 and proc.status() != psutil.STATUS_ZOMBIE
        )
    except psutil.Error:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mabench.servers.supervise", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--owner-pid", type=int, required=True)
    parser.add_argument("--owner-ctime", type=float, required=True)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command to supervise")

    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    child = subprocess.Popen(command)
    while True:
        code = child.poll()
        if code is not None:
            return code
        if stopping or not owner_alive(args.owner_pid, args.owner_ctime):
            reason = "asked to stop" if stopping else f"owner {args.owner_pid} is gone"
            print(
                f"mabench.servers.supervise: {reason}; stopping {command[0]} (pid {child.pid})",
                file=sys.stderr,
                flush=True,
            )
            stop(child)
            return 0
        time.sleep(POLL_S)


if __name__ == "__main__":
    raise SystemExit(main())
