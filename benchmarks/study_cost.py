"""Where a finished study's wall time went: ``python -m benchmarks.study_cost CHECKOUT [STUDY]``.

Reads what a study left behind in a checkout (or a fresh clone) where ``snakemake`` ran it
once, end to end: the run records under ``results/<study>/runs/`` and Snakemake's own log of
that invocation (the newest ``.snakemake/log/*.snakemake.log``). Nothing is re-run, so it
costs nothing and can be applied to any finished study, before and after a change.

Splits the Snakemake wall time into:

* ``measured phases``: Σ of every run's solo and concurrent phase spans (the run records);
* per run, outside the phases: the **protocol** (``execute_run``'s span, ``started_at`` →
  ``finished_at`` in the record, minus its phases: server checks, forced unload, loads,
  warm-ups, the checks after the phases, metrics) and the **Python job** (the run job's
  span in Snakemake's log minus ``execute_run``: interpreter, imports, Snakemake's script
  preamble, the server pool, writing the record, exit);
* the per-config jobs (``start_servers``, ``unload``), the analysis jobs, and the rest
  (Snakemake's own start-up, scheduling and shut-down).

Snakemake logs job starts and ends to the second: a job's span is known to ±1 s, so only
sums and means over many jobs are given (the mean over 135 run jobs is good to ~0.05 s).

``--window START END`` (ISO times) adds the per-run figures of the runs whose jobs lie inside
that window: on a shared machine, the part of a study during which nothing else ran.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

_STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
_RULE = re.compile(r"^(?:local)?rule (\w+):$")
_JOBID = re.compile(r"^\s+jobid: (\d+)$")
_FINISHED = re.compile(r"^Finished jobid: (\d+) \(Rule: (\w+)\)$")
MEASUREMENT_RULES = ("start_servers", "unload", "run")


def job_spans(log_text: str) -> tuple[dict[int, tuple[str, float, float]], float, float]:
    """Each finished job's rule, start and end (seconds since the epoch), and the first and
    last time stamps of the log (the invocation's span, to the second)."""
    starts: dict[int, tuple[str, float]] = {}
    spans: dict[int, tuple[str, float, float]] = {}
    stamp = first = last = None
    rule = None
    for line in log_text.splitlines():
        if m := _STAMP.match(line.strip()):
            stamp = datetime.strptime(m.group(1), "%a %b %d %H:%M:%S %Y").timestamp()
            first = stamp if first is None else first
            last = stamp
        elif m := _RULE.match(line.strip()):
            rule = m.group(1)
        elif (m := _JOBID.match(line)) and rule is not None and stamp is not None:
            starts[int(m.group(1))] = (rule, stamp)
            rule = None
        elif (m := _FINISHED.match(line.strip())) and stamp is not None:
            job = int(m.group(1))
            if job in starts:
                spans[job] = (starts[job][0], starts[job][1], stamp)
    if first is None or last is None:
        raise SystemExit("no time stamps in the Snakemake log: is it a log of a finished study?")
    return spans, first, last


def run_times(record: dict[str, Any]) -> tuple[float, float]:
    """A run record's measured phases and its ``execute_run`` span, in seconds."""
    phases = sum((p["t_end_ns"] - p["t_start_ns"]) / 1e9 for p in record["phases"])
    started = datetime.fromisoformat(record["started_at"])
    finished = datetime.fromisoformat(record["finished_at"])
    return phases, (finished - started).total_seconds()


def newest_log(checkout: Path) -> Path:
    logs = sorted((checkout / ".snakemake" / "log").glob("*.snakemake.log"))
    if not logs:
        raise SystemExit(f"no Snakemake log under {checkout / '.snakemake' / 'log'}")
    return logs[-1]


def window_per_run(
    spans: dict[int, tuple[str, float, float]],
    records: list[dict[str, Any]],
    start: float,
    end: float,
) -> dict[str, Any]:
    """Per-run means of the run jobs and records that lie wholly inside ``[start, end]``."""
    jobs = [e - s for rule, s, e in spans.values() if rule == "run" and start <= s and e <= end]
    inside = [
        run_times(r)
        for r in records
        if start <= datetime.fromisoformat(r["started_at"]).timestamp()
        and datetime.fromisoformat(r["finished_at"]).timestamp() <= end
    ]
    if not jobs or not inside:
        return {"runs": 0}
    phases = statistics.mean(p for p, _ in inside)
    execute = statistics.mean(e for _, e in inside)
    return {
        "runs": len(inside),
        "run_jobs": len(jobs),
        "measured_phases_s": phases,
        "protocol_s": execute - phases,
        "python_job_s": statistics.mean(jobs) - execute,
    }


def study_cost(checkout: Path, study: str, log_path: Path | None = None) -> dict[str, Any]:
    """Where the wall time of ``study``'s one invocation in ``checkout`` went (seconds)."""
    log_path = log_path or newest_log(checkout)
    spans, first, last = job_spans(log_path.read_text(encoding="utf-8"))
    records = sorted((checkout / "results" / study / "runs").glob("*/run_*.json"))
    if not records:
        raise SystemExit(f"no run records under {checkout / 'results' / study / 'runs'}")
    phases, executes = zip(*(run_times(json.loads(p.read_text())) for p in records), strict=True)
    by_rule: dict[str, list[float]] = defaultdict(list)
    for rule, start, end in spans.values():
        by_rule[rule].append(end - start)
    run_jobs = by_rule.get("run", [])
    n = len(records)
    wall = last - first
    measured = sum(phases)
    protocol = sum(executes) - measured
    python_job = sum(run_jobs) - sum(executes)
    per_config = sum(sum(by_rule.get(r, [])) for r in ("start_servers", "unload"))
    analysis = sum(sum(v) for r, v in by_rule.items() if r not in (*MEASUREMENT_RULES, "all"))
    return {
        "checkout": str(checkout),
        "study": study,
        "log": str(log_path),
        "runs": n,
        "run_jobs": len(run_jobs),
        "jobs": {rule: len(v) for rule, v in sorted(by_rule.items())},
        "snakemake_wall_s": wall,
        "measured_phases_s": measured,
        "measured_share_pct": 100 * measured / wall,
        "outside_per_run_s": {
            "protocol": protocol / n,
            "python_job": python_job / max(1, len(run_jobs)),
            "protocol_median": statistics.median(
                e - p for e, p in zip(executes, phases, strict=True)
            ),
        },
        "per_config_jobs_s": per_config,
        "analysis_jobs_s": analysis,
        "rest_s": wall - sum(run_jobs) - per_config - analysis,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkout", type=Path, help="where snakemake ran the study")
    parser.add_argument("study", nargs="?", default="tr114", help="results/<study> (tr114)")
    parser.add_argument("--log", type=Path, help="Snakemake's log (default: the newest)")
    parser.add_argument(
        "--window", nargs=2, metavar=("START", "END"), help="ISO times: per-run figures inside"
    )
    args = parser.parse_args(argv)
    cost = study_cost(args.checkout, args.study, args.log)
    if args.window:
        start, end = (datetime.fromisoformat(t).timestamp() for t in args.window)
        spans, _, _ = job_spans(Path(cost["log"]).read_text(encoding="utf-8"))
        runs = (args.checkout / "results" / args.study / "runs").glob("*/run_*.json")
        records = [json.loads(p.read_text()) for p in runs]
        cost["window"] = {"from": args.window[0], "to": args.window[1]}
        cost["window"] |= window_per_run(spans, records, start, end)
    json.dump(cost, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
