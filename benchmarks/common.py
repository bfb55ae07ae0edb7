"""Shared pieces of the benchmarks: machine description, goals, result files, statistics,
simulated servers.

A result file (``benchmarks/results/<name>.json``) holds the machine it ran on, each goal
with its measured value and pass/fail, and the details that back the numbers. The README's
results table is generated from these files (``python -m benchmarks --table``).
"""

from __future__ import annotations

import json
import math
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mabench.measure.environment import cpu_model
from mabench.servers.process import stop as stop_process
from mabench.servers.simulated import SimServerProcess

ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = ROOT / "benchmarks"
RESULTS_DIR = BENCH_DIR / "results"
WORK_DIR = BENCH_DIR / ".work"  # git-ignored scratch space (generated records, quick results)
QUICK_RESULTS_DIR = WORK_DIR / "results-quick"


# ---------------------------------------------------------------------------------------------
# Machine
# ---------------------------------------------------------------------------------------------


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def machine() -> dict[str, Any]:
    """What the benchmark ran on (and how busy the machine was when it started)."""
    import psutil

    status = _git("status", "--porcelain", "--untracked-files=no", "--", "src")
    return {
        "hostname": socket.gethostname(),
        "cpu_model": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git_commit": _git("rev-parse", "HEAD"),
        "src_dirty": bool(status) if status is not None else None,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }


# ---------------------------------------------------------------------------------------------
# Goals and results
# ---------------------------------------------------------------------------------------------

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": lambda a, b: a >= b,
    "<=": lambda a, b: a <= b,
}
_SYMBOL = {">=": "≥", "<=": "≤"}


@dataclass
class Goal:
    name: str
    measured: float | None
    op: str
    target: float
    unit: str = ""
    how: str = ""  # what statistic "measured" is (e.g. "median of 4 runs")

    @property
    def passed(self) -> bool | None:
        if self.measured is None or (
            isinstance(self.measured, float) and math.isnan(self.measured)
        ):
            return None
        return _OPS[self.op](self.measured, self.target)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "goal": f"{_SYMBOL[self.op]} {self.target:g}{(' ' + self.unit) if self.unit else ''}",
            "op": self.op,
            "target": self.target,
            "measured": self.measured,
            "unit": self.unit,
            "how": self.how,
            "pass": self.passed,
        }


@dataclass
class Result:
    """What one benchmark produced. ``status`` is derived unless set (skipped, error)."""

    name: str
    title: str
    goals: list[Goal] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    status: str | None = None  # None: pass/fail from the goals

    def goal(self, *args: Any, **kwargs: Any) -> Goal:
        g = Goal(*args, **kwargs)
        self.goals.append(g)
        return g

    def skipped(self, reason: str) -> Result:
        self.status = "skipped"
        self.notes.append(reason)
        return self

    @property
    def final_status(self) -> str:
        if self.status:
            return self.status
        verdicts = [g.passed for g in self.goals]
        if not verdicts:
            return "measured"
        if any(v is False for v in verdicts):
            return "fail"
        if any(v is None for v in verdicts):
            return "incomplete"
        return "pass"


def write_result(
    result: Result,
    *,
    quick: bool,
    machine_info: dict[str, Any],
    started: float,
    out_dir: Path | None = None,
) -> Path:
    out_dir = out_dir or (QUICK_RESULTS_DIR if quick else RESULTS_DIR)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{result.name}.json"
    doc = {
        "benchmark": result.name,
        "title": result.title,
        "status": result.final_status,
        "quick": quick,
        "machine": machine_info,
        "duration_s": round(time.monotonic() - started, 1),
        "load_avg_1m_end": round(os.getloadavg()[0], 2),
        "goals": [g.to_json() for g in result.goals],
        "notes": result.notes,
        "details": result.details,
    }
    path.write_text(json.dumps(_clean(doc), indent=1, allow_nan=False) + "\n")
    return path


def _clean(value: Any) -> Any:
    """JSON-safe: NaN/inf become null, tuples lists, dataclasses dicts."""
    if isinstance(value, float):
        return None if (math.isnan(value) or math.isinf(value)) else value
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "__dataclass_fields__"):
        return _clean(asdict(value))
    if hasattr(value, "item"):  # numpy scalars
        return _clean(value.item())
    return value


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Statistics of repeated measurements
# ---------------------------------------------------------------------------------------------


def quantile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile (numpy's default), q in [0, 1]."""
    xs = sorted(values)
    if not xs:
        return float("nan")
    pos = (len(xs) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summary(values: Sequence[float], digits: int = 4) -> dict[str, Any]:
    """Median, spread (min, max, IQR, p99) and count of repeated measurements."""
    xs = [float(v) for v in values if v is not None]
    if not xs:
        return {"n": 0}

    def r(x: float) -> float:
        return round(x, digits)

    return {
        "n": len(xs),
        "median": r(statistics.median(xs)),
        "mean": r(statistics.fmean(xs)),
        "min": r(min(xs)),
        "max": r(max(xs)),
        "p25": r(quantile(xs, 0.25)),
        "p75": r(quantile(xs, 0.75)),
        "p99": r(quantile(xs, 0.99)),
        "stdev": r(statistics.stdev(xs)) if len(xs) > 1 else 0.0,
    }


# ---------------------------------------------------------------------------------------------
# Simulated servers (real `mabench sim-serve` processes)
# ---------------------------------------------------------------------------------------------


class IdealServers:
    """``n`` ideal servers (:mod:`benchmarks.idealserver`) in one process."""

    def __init__(self, n: int, ttft_ms: float, token_ms: float) -> None:
        args = [
            sys.executable,
            "-m",
            "benchmarks.idealserver",
            "--servers",
            str(n),
            "--ttft-ms",
            str(ttft_ms),
            "--token-ms",
            str(token_ms),
            "--busy-poll",
        ]
        self.proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.stop()
            raise RuntimeError("ideal server did not start")
        self.ports: list[int] = json.loads(line)["ports"]
        self.urls = [f"http://127.0.0.1:{p}" for p in self.ports]
        self.pids = [self.proc.pid]

    def lateness(self) -> dict[str, Any]:
        """How late the servers wrote their chunks since the last ask (ms: median, p99, max)."""
        with urllib.request.urlopen(f"{self.urls[0]}/ideal/lateness", timeout=10) as r:
            data = json.load(r)
        return {k: summary([us / 1000 for us in v]) for k, v in data.items()}

    def stop(self) -> None:
        stop_process(self.proc)


class SimServers:
    """``n`` ``mabench sim-serve`` processes (parallel mode), one per agent."""

    def __init__(self, n: int, ttft_ms: float, token_ms: float, log_dir: Path) -> None:
        self.procs: list[SimServerProcess] = []
        try:
            for _ in range(n):
                self.procs.append(
                    SimServerProcess(log_dir, ttft_ms=ttft_ms, token_ms=token_ms, mode="parallel")
                )
            for p in self.procs:
                p.wait_ready()
        except BaseException:
            self.stop()
            raise
        self.urls = [p.url for p in self.procs]
        self.pids = [p.proc.pid for p in self.procs]

    def stop(self) -> None:
        for p in self.procs:
            p.stop()


@contextmanager
def servers(kind: str, n: int, ttft_ms: float, token_ms: float) -> Iterator[Any]:
    """``kind`` ``ideal`` (one lean process) or ``sim`` (n ``mabench sim-serve`` processes)."""
    fleet = (
        IdealServers(n, ttft_ms, token_ms)
        if kind == "ideal"
        else SimServers(n, ttft_ms, token_ms, WORK_DIR / "logs")
    )
    try:
        yield fleet
    finally:
        fleet.stop()
