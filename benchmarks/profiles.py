"""``python -m benchmarks.profiles [NAME ...]``: pyinstrument profiles behind the findings.

Writes ``benchmarks/results/profiles/<name>.txt`` (before and after each proposed fix):

* ``aggregate-product`` / ``aggregate-proposed``: 1,000 synthetic run records through
  ``mabench.aggregate.aggregate`` / :func:`benchmarks.experimental_aggregate.aggregate_fast`;
* ``statistics-product`` / ``statistics-proposed``: ``mabench.stats.run`` on the 10k-run
  tables (written by the analysis-scale benchmark) without / with
  :func:`benchmarks.experimental_stats.apply`;
* ``harness-n16-<coordinator>-<variant>``: the concurrent phase of 16 agents on ideal
  servers, ``product`` (``run_phase``) vs ``persistent_lean_clients``.

Not part of ``python -m benchmarks``: profiles are evidence, not measurements.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile

from benchmarks.common import RESULTS_DIR, ROOT, WORK_DIR, log

OUT = RESULTS_DIR / "profiles"
NAMES = (
    "aggregate-product",
    "aggregate-proposed",
    "statistics-product",
    "statistics-proposed",
    "harness-n16-asyncio-product",
    "harness-n16-asyncio-persistent_lean_clients",
    "harness-n16-threads-product",
    "harness-n16-threads-persistent_lean_clients",
)


def _profile(fn, interval: float = 0.001) -> str:
    import pyinstrument

    prof = pyinstrument.Profiler(interval=interval)
    prof.start()
    try:
        fn()
    finally:
        prof.stop()
    return prof.output_text(unicode=False, color=False, show_all=False)


def one(name: str) -> str:
    if name.startswith("aggregate-"):
        from benchmarks.synthetic_records import ensure_records

        paths = ensure_records(1000)
        with tempfile.TemporaryDirectory() as d:
            if name.endswith("product"):
                from mabench.aggregate import aggregate

                return _profile(lambda: aggregate(paths, d))
            from benchmarks.experimental_aggregate import aggregate_fast

            return _profile(lambda: aggregate_fast(paths, d))
    if name.startswith("statistics-"):
        from mabench import stats

        tables = WORK_DIR / "analysis" / "product-10000" / "tables"
        if not (tables / "calls.parquet").exists():
            tables = WORK_DIR / "analysis" / "proposed-10000" / "tables"
        if not (tables / "calls.parquet").exists():
            return "no 10k tables yet: run `python -m benchmarks analysis_scale` first\n"
        if name.endswith("proposed"):
            from benchmarks.experimental_stats import apply

            apply()
        with tempfile.TemporaryDirectory() as d:
            return _profile(lambda: stats.run(tables, d, None))
    if name.startswith("harness-n16-"):
        _, _, coord, variant = name.split("-", 3)
        from benchmarks.common import servers
        from benchmarks.experimental import Session
        from benchmarks.harness_overhead import FULL, make_study
        from mabench.agents import Clock, build_plans
        from mabench.client import Timeouts
        from mabench.records import CONCURRENT

        p = dict(FULL)
        with servers("ideal", 16, p["ttft_ms"], p["token_ms"]) as fleet:
            urls = {f"s{i:02d}": u for i, u in enumerate(fleet.urls)}
            study = make_study(urls, coord, p)
            plans = build_plans(study, study.config("c1"), urls, "corpus")
            session = Session(variant, coord, plans, Timeouts())
            try:
                return _profile(
                    lambda: [session.phase(plans, CONCURRENT, Clock()) for _ in range(3)],
                    interval=0.0005,
                )
            finally:
                session.close()
    raise ValueError(f"unknown profile {name!r}")


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
    for name in names:  # each in a fresh process: patches and caches never leak
        log(f"profile {name}")
        subprocess.call(
            [sys.executable, "-m", "benchmarks.profiles", name, "--in-process"], cwd=ROOT
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
