"""The benchmarks, run as their users run them: ``python -m benchmarks NAME --quick --out-dir
DIR`` in a fresh process, judged by the result file it writes (``DIR/NAME.json``).

A test here asserts what the benchmark's design guarantees (the ideal servers' exact timing,
the identities its numbers obey), never that a quick run met its goals: the machine may be
busy. Nothing here imports ``benchmarks``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: a quick run is a smoke check: seconds to a few minutes (pipeline_overhead, on a busy machine);
#: under pytest's own timeout, so that a run that hangs is stopped here, with what it started
RUN_TIMEOUT_S = 540

Result = dict[str, Any]


def run_benchmarks(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m benchmarks ARGS`` from the repository's root (where ``benchmarks`` is), in a
    session of its own: past :data:`RUN_TIMEOUT_S` the runner, the benchmark's process and
    what it started (Snakemake, servers) are stopped together and the test fails."""
    cmd = [sys.executable, "-m", "benchmarks", *args]
    with subprocess.Popen(
        cmd,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as proc:
        try:
            out, err = proc.communicate(timeout=RUN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            out, err = _stop_session(proc)
            pytest.fail(f"{' '.join(cmd)} ran over {RUN_TIMEOUT_S} s; stopped:\n{err[-4000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _stop_session(proc: subprocess.Popen[str]) -> tuple[str, str]:
    """SIGTERM to ``proc``'s session (Snakemake stops its jobs and servers), SIGKILL after 60 s."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        return proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        return proc.communicate()


def run_quick(name: str, out_dir: Path) -> Result:
    """Benchmark ``name`` at its quick sizes into ``out_dir``: its result, which must hold
    measurements (neither an error nor skipped)."""
    proc = run_benchmarks(name, "--quick", "--out-dir", str(out_dir))
    path = out_dir / f"{name}.json"
    assert proc.returncode == 0 and path.exists(), (
        f"python -m benchmarks {name} --quick exited {proc.returncode} without {path.name}:\n"
        f"{proc.stderr[-4000:]}"
    )
    result = json.loads(path.read_text(encoding="utf-8"))
    notes = "\n".join(result["notes"])
    assert result["status"] not in ("error", "skipped"), f"{name}: {result['status']}\n{notes}"
    assert result["quick"] is True and result["benchmark"] == name
    return result


@pytest.fixture(scope="session")
def benchmarks_cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    """``benchmarks_cli(*args)``: ``python -m benchmarks ARGS``, finished."""
    return run_benchmarks


@pytest.fixture(scope="session")
def results_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The one folder every quick run of the session writes its result into."""
    return tmp_path_factory.mktemp("benchmark-results")


@pytest.fixture(scope="session")
def quick(results_dir: Path) -> Callable[[str], Result]:
    """``quick(name)``: the result of benchmark ``name`` at its quick sizes, run once per
    session (tests of one benchmark share its run)."""
    done: dict[str, Result] = {}

    def result(name: str) -> Result:
        if name not in done:
            done[name] = run_quick(name, results_dir)
        return done[name]

    return result
