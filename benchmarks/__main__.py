"""``python -m benchmarks [NAME ...] [--quick] [--table]``: run the benchmarks.

Without names every benchmark runs, one after another, each in a fresh Python process (so
one cannot warm caches or leak memory into the next). Results go to
``benchmarks/results/<name>.json`` and the results table in ``benchmarks/README.md`` is
regenerated from those files. ``--quick`` runs tiny sizes as a smoke check and writes to
``benchmarks/.work/results-quick/`` instead (it never overwrites the committed results).
``--table`` only regenerates the README's tables from the committed results. ``--out-dir``
and ``--readme`` name other places (the tests run benchmarks into a temporary folder).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

from benchmarks import BENCHMARKS
from benchmarks.common import (
    BENCH_DIR,
    QUICK_RESULTS_DIR,
    RESULTS_DIR,
    ROOT,
    Result,
    log,
    machine,
    write_result,
)
from benchmarks.readme import update_readme


def run_one(name: str, quick: bool, out_dir: Path | None = None) -> Path:
    """Run one benchmark in this process and write its result file."""
    module = importlib.import_module(f"benchmarks.{name}")
    info = machine()
    started = time.monotonic()
    try:
        result = module.run(quick=quick)
    except Exception:
        result = Result(name, getattr(module, "TITLE", name), status="error")
        result.notes.append(traceback.format_exc())
        log(f"{name}: error\n{traceback.format_exc()}")
    return write_result(result, quick=quick, machine_info=info, started=started, out_dir=out_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "names", nargs="*", help=f"benchmarks to run (default: all): {', '.join(BENCHMARKS)}"
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes: a smoke check of the harness"
    )
    parser.add_argument(
        "--table", action="store_true", help="only regenerate the README's tables from the results"
    )
    parser.add_argument(
        "--out-dir",
        type=Path,
        help="the results' folder, written by a run and read by --table (default: "
        "benchmarks/results; with --quick, benchmarks/.work/results-quick)",
    )
    parser.add_argument(
        "--readme",
        type=Path,
        default=BENCH_DIR / "README.md",
        help="the README whose tables --table regenerates (default: benchmarks/README.md)",
    )
    parser.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.table:
        update_readme(args.readme, args.out_dir or RESULTS_DIR)
        return 0
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)} (known: {', '.join(BENCHMARKS)})")
    names = args.names or list(BENCHMARKS)

    if args.in_process:
        for name in names:
            run_one(name, args.quick, args.out_dir)
        return 0

    out_dir = args.out_dir or (QUICK_RESULTS_DIR if args.quick else RESULTS_DIR)
    failed = []
    for name in names:
        log(f"=== {name}{' (quick)' if args.quick else ''}: load average {os.getloadavg()[0]:.2f}")
        cmd = [sys.executable, "-m", "benchmarks", name, "--in-process", "--out-dir", str(out_dir)]
        if args.quick:
            cmd.append("--quick")
        rc = subprocess.call(cmd, cwd=ROOT)
        path = out_dir / f"{name}.json"
        status = json.loads(path.read_text())["status"] if path.exists() else "missing"
        shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
        log(f"=== {name}: {status} (exit {rc}) -> {shown}")
        if rc != 0 or status in ("fail", "error", "missing"):
            failed.append(f"{name} ({status})")
    if not args.quick and args.out_dir is None:
        update_readme()
    if failed:
        log(f"not passing: {', '.join(failed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
