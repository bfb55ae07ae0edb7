"""Measure one run and persist it: the record on success, a failure report on failure.

A run record is written atomically and only when the whole run succeeded, so a file at the
record's path is always a complete measurement. A failed attempt leaves a JSON report under
``failures_dir`` (cause, server, phase, agent, traceback) that the report's reliability table
counts, and never touches any other record.
"""

from __future__ import annotations

import logging
import traceback
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from mabench.config import Study
from mabench.measure.errors import MabenchError, RunFailed, ServerCallError
from mabench.measure.protocol import execute_run
from mabench.measure.records import RunRecord, WriteFailed, write_json_atomic, write_record
from mabench.servers.pool import ServerPool

log = logging.getLogger(__name__)


def failure_report(
    study: Study, config_id: str, run_index: int, attempt: int, exc: BaseException
) -> dict[str, object]:
    info = None
    if isinstance(exc, RunFailed):
        info = msgspec.to_builtins(exc.info)
    elif isinstance(exc, ServerCallError):
        info = msgspec.to_builtins(exc.info())
    return {
        "kind": "mabench.failure",
        "study": study.name,
        "config_id": config_id,
        "run_index": run_index,
        "attempt": attempt,
        "at": datetime.now(UTC).isoformat(),
        "cause": (info or {}).get("kind") or type(exc).__name__,
        "error_type": type(exc).__name__,
        "message": str(exc),
        "server_url": (info or {}).get("url"),
        "phase": (info or {}).get("phase"),
        "agent": getattr(exc, "agent", None),
        "traceback": "".join(traceback.format_exception(exc)),
    }


def measure(
    study: Study,
    config_id: str,
    run_index: int,
    out: str | Path,
    *,
    pool: ServerPool,
    attempt: int = 1,
    failures_dir: str | Path | None = None,
) -> RunRecord:
    """Acquire the servers, run the protocol, write the record; on failure write a report and re-raise."""
    config = study.config(config_id)
    try:
        with pool.exclusive():
            urls = pool.acquire(config)
            threads = {name: proc.threads for name, proc in pool.processes().items()}
            record = execute_run(
                study,
                config_id,
                run_index,
                urls,
                attempt=attempt,
                threads=threads,
                restart=pool.restarter(config),
            )
        errors = [c for c in record.calls if c.error is not None]
        if errors:  # execute_run raises on failed calls; this guards the invariant
            raise MabenchError(f"{len(errors)} call(s) failed in a run that did not raise")
        write_record(out, record)
        log.info(
            "%s run %d: true efficiency %s %%, seed efficiency %.2f %%",
            config.id,
            run_index,
            "n/a"
            if record.metrics.true_efficiency is None
            else f"{record.metrics.true_efficiency:.2f}",
            record.metrics.seed_efficiency,
        )
        return record
    except BaseException as exc:
        if failures_dir is not None and not isinstance(exc, KeyboardInterrupt):
            report_failure(study, config_id, run_index, attempt, exc, Path(failures_dir))
        raise


def report_failure(
    study: Study, config_id: str, run_index: int, attempt: int, exc: BaseException, folder: Path
) -> None:
    """Write the failure report of ``exc`` under ``folder`` and log it; a report that cannot be
    written (the disk that failed the record is full) is logged, never raised in place of
    ``exc``."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    path = folder / f"{config_id}_run{run_index}_attempt{attempt}_{stamp}.json"
    try:
        write_json_atomic(path, failure_report(study, config_id, run_index, attempt, exc))
    except WriteFailed as unwritten:
        log.error(
            "%s run %d attempt %d failed: %s (no failure report: %s)",
            config_id,
            run_index,
            attempt,
            exc,
            unwritten,
        )
        return
    log.error(
        "%s run %d attempt %d failed: %s (report: %s)", config_id, run_index, attempt, exc, path
    )
