"""Run a command and name every process it left behind, however far down it started them.

``python subreaper.py REPORT TIMEOUT_S -- CMD...`` makes itself a child subreaper (Linux
``prctl``), runs CMD and waits for it. A process whose parent exits is re-parented to the
nearest subreaper instead of init, so once CMD has exited, every process it started, directly
or not, in its own session or not, that is still there (running, or ended and not yet reaped)
is a descendant of this one. Their descriptions go to REPORT (JSON); then they are killed and
reaped, and the helper exits with CMD's status.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>
END_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Outcome:
    returncode: int
    stdout: str
    stderr: str
    #: ``"<pid> <status>: <command line>"`` of each process the command left behind
    left_behind: list[str]


def run(cmd: list[str], cwd: Path, env: dict[str, str], timeout_s: float) -> Outcome:
    """Run ``cmd`` in ``cwd`` under this helper; what it printed and what it left behind."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "left_behind.json"
        helper = [sys.executable, __file__, str(report), str(timeout_s), "--", *cmd]
        proc = subprocess.run(
            helper, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout_s + 30
        )
        if not report.exists():
            raise RuntimeError(f"the subreaper wrote no report:\n{proc.stderr[-4000:]}")
        left = json.loads(report.read_text())
    return Outcome(proc.returncode, proc.stdout, proc.stderr, left)


def become_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(errno)}")


def describe(proc: psutil.Process) -> str:
    try:
        return f"{proc.pid} {proc.status()}: {' '.join(proc.cmdline()) or proc.name()}"
    except psutil.Error:
        return f"{proc.pid} gone"


def end_descendants() -> None:
    """Kill and reap every descendant (those re-parented to this process are its children)."""
    deadline = time.monotonic() + END_TIMEOUT_S
    while (left := psutil.Process().children(recursive=True)) and time.monotonic() < deadline:
        for proc in left:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        reap_children()
        time.sleep(0.05)


def reap_children() -> None:
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass


def main(argv: list[str]) -> int:
    report, timeout_s, separator, *cmd = argv
    if separator != "--" or not cmd:
        raise SystemExit("usage: subreaper.py REPORT TIMEOUT_S -- CMD...")
    become_subreaper()
    try:
        status = subprocess.run(cmd, timeout=float(timeout_s)).returncode
    except subprocess.TimeoutExpired:
        status = 124
    left = psutil.Process().children(recursive=True)
    Path(report).write_text(json.dumps([describe(p) for p in left]))
    end_descendants()
    return status


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
