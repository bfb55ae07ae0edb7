"""``python -m benchmarks.profiles [NAME ...]``: pyinstrument profiles behind the findings.

Writes ``benchmarks/results/profiles/<name>.txt``:

* ``aggregate``: 1,000 synthetic run records through ``mabench.analysis.aggregate.aggregate``;
* ``statistics``: ``mabench.analysis.stats.run`` on the 10k-run tables the analysis-scale benchmark
  wrote (run it first);
* ``harness-n16-<coordinator>``: three concurrent phases of 16 agents on ideal servers,
  through the coordinator ``execute_run`` uses (clients warmed up first, as in a run).

The same profiles from before the fixes (commit 976db66) are in ``profiles/before/``.
Not part of ``python -m benchmarks``: profiles are evidence, not measurements.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile

from benchmarks.common import RESULTS_DIR, ROOT, WORK_DIR, log

OUT = RESULTS_DIR / "profiles"
NAMES = ("aggregate", "statistics", "harness-n16-asyncio", "harness-n16-threads")


def _profile(fn, interval: float = 0.001) -> str:
    import pyinstrument

    prof = pyinstrument.Profiler(interval=interval)
    prof.start()
    try:
        fn()
    finally:
        prof.stop()
    return prof.output_text(unicode=False, color=False, show_all=False)


def _tables_10k():
    found = sorted(WORK_DIR.glob("analysis/*10000*/tables/calls.parquet"))
    return found[0].parent if found else None


def one(name: str) -> str:
    if name == "aggregate":
        from mabench.analysis.aggregate import aggregate
        from mabench.datasets.synthetic import ensure_records

        paths = ensure_records(1000, WORK_DIR / "records")
        with tempfile.TemporaryDirectory() as d:
            return _profile(lambda: aggregate(paths, d))
    if name == "statistics":
        from mabench.analysis import stats

        tables = _tables_10k()
        if tables is None:
            return "no 10k tables yet: run `python -m benchmarks analysis_scale` first\n"
        with tempfile.TemporaryDirectory() as d:
            return _profile(lambda: stats.run(tables, d, None))
    if name.startswith("harness-n16-"):
        coord = name.removeprefix("harness-n16-")
        from benchmarks.common import servers
        from benchmarks.harness_overhead import FULL, make_study
        from mabench.measure.agents import Clock, build_plans, warmup_plan
        from mabench.measure.client import Timeouts
        from mabench.measure.coordinators import open_coordinator
        from mabench.measure.records import CONCURRENT

        p = dict(FULL)
        with servers("ideal", 16, p["ttft_ms"], p["token_ms"]) as fleet:
            urls = {f"s{i:02d}": u for i, u in enumerate(fleet.urls)}
            study = make_study(urls, coord, p)
            plans = build_plans(study, study.config("c1"), urls, "corpus")
            with open_coordinator(coord, Timeouts()) as c:
                c.run_phase(
                    [warmup_plan(x) for x in plans], "warmup", concurrent=False, clock=Clock()
                )
                return _profile(
                    lambda: [
                        c.run_phase(plans, CONCURRENT, concurrent=True, clock=Clock())
                        for _ in range(3)
                    ],
                    interval=0.0005,
                )
    raise ValueError(f"unknown profile {name!r} (one of {', '.join(NAMES)})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.profiles", description=__doc__.splitlines()[0]
    )
    ap.add_argument("names", nargs="*", help=f"default: all of {', '.join(NAMES)}")
    ap.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    names = args.names or list(NAMES)
    OUT.mkdir(parents=True, exist_ok=True)
    if args.in_process:
        for name in names:
            (OUT / f"{name}.txt").write_text(one(name))
        return 0
    for name in names:  # each in a fresh process: caches never leak between profiles
        log(f"profile {name}")
        subprocess.call(
            [sys.executable, "-m", "benchmarks.profiles", name, "--in-process"], cwd=ROOT
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
