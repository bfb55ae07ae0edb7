"""Progress of a study you can read while it runs: one line per measured run, with time left.

After each run the ``run`` rule appends the run to ``results/<study>/logs/progress.jsonl`` and
prints one line on the terminal (and in the run's log)::

    [7/135] test004 run 2: true efficiency 61.20 %, interference 97.31 %, seed efficiency 99.12 %; about 41 min left (128 runs at ~19 s)

Time left = the runs still without a record × the time per run so far in this invocation
(from the start of its first measured run to the end of this one, divided by the runs it
measured, so server start-up, unloads and retries between runs are counted in).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from mabench.config import Study
from mabench.measure.records import RunRecord
from mabench.servers.ownership import OWNER_ENV

__all__ = ["Progress", "report_run"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Progress:
    """Where a study stands after one run."""

    done: int  # runs with a record
    total: int  # configs × runs
    measured_now: int  # runs this invocation measured
    per_run_s: float | None  # time per run in this invocation

    @property
    def left_s(self) -> float | None:
        if self.per_run_s is None:
            return None
        return self.per_run_s * (self.total - self.done)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def line(record: RunRecord, progress: Progress) -> str:
    """The progress line of one run."""
    m = record.metrics
    true = "n/a" if m.true_efficiency is None else f"{m.true_efficiency:.2f} %"
    interference = (
        ""
        if m.interference_efficiency is None
        else f", interference {m.interference_efficiency:.2f} %"
    )
    text = (
        f"[{progress.done}/{progress.total}] {record.config_id} run {record.run_index}: "
        f"true efficiency {true}{interference}, seed efficiency {m.seed_efficiency:.2f} %"
    )
    left = progress.total - progress.done
    if left == 0:
        return text + "; all runs measured"
    if progress.left_s is None or progress.per_run_s is None:
        return text + f"; {left} runs left"
    return (
        text + f"; about {_duration(progress.left_s)} left "
        f"({left} runs at ~{_duration(progress.per_run_s)})"
    )


def _append(path: Path, entry: dict[str, object]) -> list[dict[str, object]]:
    """Append ``entry`` to the JSON-lines file and return every entry in it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry) + "\n")
    entries = []
    for text in path.read_text(encoding="utf-8").splitlines():
        try:
            entries.append(json.loads(text))
        except ValueError:
            continue  # a line cut by a crash: the others still count
    return entries


def measure_progress(study: Study, record: RunRecord, root: Path) -> Progress:
    """Log this run and work out where the study stands (``root``: results/<study>/)."""
    owner = os.environ.get(OWNER_ENV, str(os.getpid()))
    entries = _append(
        root / "logs" / "progress.jsonl",
        {
            "owner": owner,
            "config_id": record.config_id,
            "run_index": record.run_index,
            "started_at": record.started_at,
            "finished_at": record.finished_at,
        },
    )
    mine = [e for e in entries if e.get("owner") == owner]
    start = min(datetime.fromisoformat(str(e["started_at"])) for e in mine)
    elapsed = (datetime.fromisoformat(record.finished_at) - start).total_seconds()
    runs = [(c, r) for c in study.config_ids for r in range(1, study.runs + 1)]
    done = sum((root / "runs" / c / f"run_{r}.json").exists() for c, r in runs)
    return Progress(done, len(runs), len(mine), elapsed / len(mine) if mine else None)


def report_run(study: Study, record: RunRecord, root: str | Path) -> str:
    """Record the run's progress and show its line on the terminal and in the log."""
    text = line(record, measure_progress(study, record, Path(root)))
    log.info("%s", text)
    terminal = sys.__stderr__
    if terminal is not None and terminal is not sys.stderr:  # the rule log took stderr
        print(f"mabench: {text}", file=terminal, flush=True)
    return text
