"""Run records → the ``runs``, ``agents`` and ``calls`` tables (schemas in :mod:`mabench.analysis.tables`).

Plus ``failures``: every failed attempt found under ``results/<study>/failures/``, so the
report's reliability table counts what went wrong on the way to the records (a report that
cannot be read is left out and logged as a warning, never fatal).

Every input is checked first (:mod:`mabench.analysis.integrity`): a record that cannot be
read, that holds another run than its path names, that another file holds too, or that was
measured under options its config no longer has, stops the step with one
:class:`~mabench.analysis.integrity.IntegrityError` naming every such file. The tables are
written into a staging folder and moved into place only when every input passed, so a refused
step leaves the tables already there untouched. The last file written is ``inputs.json``, the
list of the records the tables hold (path, run, config hash): the rule declares it as an
ordinary output, so after a refusal it is missing and the next invocation checks (and refuses)
again instead of taking the old tables as up to date.

Records are read in chunks of :data:`CHUNK_RECORDS`: each chunk's rows become Arrow tables at
once and are appended to the Parquet files, so memory holds a few chunks, never every row of a
large study as Python dicts. On Linux the chunks are read by a pool of forked worker
processes (one per CPU this process may use, see :func:`worker_count`); the parent writes the
chunks in record order, so the tables are the same, row for row, however many workers read
them.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from mabench.analysis.integrity import (
    Expected,
    IntegrityError,
    Problem,
    RecordFacts,
    Unreadable,
    check_records,
    check_unload_files,
    failure_report_problem,
    load_json_object,
    load_run_record,
    record_facts,
    skipped_report,
)
from mabench.analysis.tables import (
    AGENTS_SCHEMA,
    CALLS_SCHEMA,
    FAILURES_SCHEMA,
    RUNS_SCHEMA,
    TableWriter,
    to_table,
    write_table,
)
from mabench.measure.collector import gc_paused
from mabench.measure.records import (
    CONCURRENT,
    SOLO,
    CallRecord,
    RunRecord,
    SlurmJob,
    prepare_reading,
    write_json_atomic,
)

SOURCE = "mabench"
#: options as sorted JSON; one encoder (``json.dumps(..., sort_keys=True)`` builds one per call)
_OPTIONS_JSON = json.JSONEncoder(sort_keys=True)
#: run records read (and turned into Arrow tables) at a time; each is one Parquet row group
CHUNK_RECORDS = 2000
TABLES = ("runs", "agents", "calls", "failures")
#: the list of records the tables hold, written after the tables (see the module docstring)
INPUTS_MANIFEST = "inputs.json"

log = logging.getLogger(__name__)


def _ts(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _mean(values: Iterable[float]) -> float | None:
    values = list(values)
    return sum(values) / len(values) if values else None


def _key(r: RunRecord) -> dict[str, Any]:
    return {
        "study": r.study,
        "source": SOURCE,
        "config_id": r.config_id,
        "scenario": r.scenario,
        "run_index": r.run_index,
    }


def slurm_columns(job: SlurmJob | None) -> dict[str, Any]:
    """The runs table's Slurm columns of one record (all null outside Slurm)."""
    if job is None:
        return {}
    return {
        "slurm_job_id": job.job_id,
        "slurm_node": job.node,
        "slurm_partition": job.partition,
        "slurm_cpus": job.cpus,
        "slurm_gpus": len(job.gpus),
    }


def run_row(r: RunRecord, path: str) -> dict[str, Any]:
    m, env = r.metrics, r.environment
    models = sorted({a.model for a in r.topology.agents})
    return {
        **_key(r),
        "attempt": r.attempt,
        "started_at": _ts(r.started_at),
        "finished_at": _ts(r.finished_at),
        "coordinator": r.protocol.coordinator,
        "phase_order": ",".join(r.protocol.phase_order),
        "topology": r.topology.kind,
        "n_agents": m.n_agents,
        "n_servers": len({a.server for a in r.topology.agents}),
        "model": "+".join(models),
        "backend": ";".join(sorted({s.backend for s in r.topology.servers})),
        "api": "+".join(sorted({s.api for s in r.topology.servers})),
        "concurrent_wall_s": m.concurrent_wall_s,
        "concurrent_sum_s": m.concurrent_sum_s,
        "solo_sum_s": m.solo_sum_s,
        "seed_speedup": m.seed_speedup,
        "seed_efficiency": m.seed_efficiency,
        "true_speedup": m.true_speedup,
        "true_efficiency": m.true_efficiency,
        **_baseline_columns(r),
        "true_speedup_excl_load": m.true_speedup_excl_load,
        "true_efficiency_excl_load": m.true_efficiency_excl_load,
        "solo_reloads": m.solo_reloads,
        "concurrent_reloads": m.concurrent_reloads,
        "solo_reload_s": m.solo_reload_s,
        "concurrent_reload_s": m.concurrent_reload_s,
        "coordination_overhead_ms": m.coordination_overhead_ms,
        "throughput_delta": m.throughput_delta,
        "ttft_delta_ms": m.ttft_delta_ms,
        "contention_legacy": m.contention_legacy,
        "contention_ttft": m.contention_ttft,
        "contention_throughput": m.contention_throughput,
        "isolation_verified": r.isolation.verified,
        "isolation_unavailable": ";".join(r.isolation.unavailable),
        **_validity_columns(r),
        "n_calls": len(r.calls),
        "n_errors": sum(c.error is not None for c in r.calls),
        "hostname": env.hostname,
        "cpu_model": env.cpu_model,
        "cpu_count": env.cpu_count,
        "cpus_available": env.cpus_available,
        "server_threads": ";".join(
            f"{s.name}={s.threads}" for s in r.topology.servers if s.threads is not None
        )
        or None,
        **_server_settings_columns(r),
        "cache_reset": _cache_reset(r),
        "gpus": ";".join(env.gpus),
        **slurm_columns(env.slurm),
        "server_version": ";".join(sorted({s.version or "" for s in r.topology.servers})),
        "mabench_version": env.mabench_version,
        "git_commit": env.git_commit,
        "config_hash": env.config_hash,
        "record_path": path,
    }


def _ms(ns: int | None) -> float | None:
    """Nanoseconds as milliseconds; None (a duration the server did not report) stays None."""
    return None if ns is None else ns / 1e6


def _cache_reset(r: RunRecord) -> str | None:
    """Each server's cache policy, ``a: endpoint; b: salt``; None in records without one."""
    policies = [f"{s.name}: {s.cache_reset}" for s in r.topology.servers if s.cache_reset]
    return "; ".join(policies) or None


def _server_settings_columns(r: RunRecord) -> dict[str, Any]:
    servers = [s for s in r.topology.servers if s.settings]
    settings = "; ".join(
        f"{s.name}: " + ", ".join(f"{k}={v}" for k, v in sorted(s.settings.items()))
        for s in servers
    )
    sources = sorted({s.settings_source for s in servers if s.settings_source})
    return {
        "server_settings": settings or None,
        "server_settings_source": ";".join(sources) or None,
    }


def _baseline_columns(r: RunRecord) -> dict[str, Any]:
    """What the run's true speedup is measured against, and the interference numbers. A
    record of schema version 1 or 2 has no baseline of its own: it measured the solo phase
    only, so its true speedup is the interference one and its baseline the solo phase."""
    m, b = r.metrics, r.protocol.baseline
    if b is None:
        return {
            "baseline": "solo",
            "baseline_reason": "recorded before sequential baselines (schema version "
            f"{r.schema_version}): the solo phase",
            "sequential_sum_s": None,
            "interference_speedup": m.true_speedup,
            "interference_efficiency": m.true_efficiency,
        }
    return {
        "baseline": b.kind or "none",
        "baseline_reason": b.reason,
        "sequential_sum_s": m.sequential_sum_s,
        "interference_speedup": m.interference_speedup,
        "interference_efficiency": m.interference_efficiency,
    }


def _validity_columns(r: RunRecord) -> dict[str, Any]:
    v = r.validity
    if v is None:
        return {
            "isolation_after_verified": None,
            "work_matched": None,
            "work_diverged": None,
            "validity_flags": None,
            "cache_state": None,
            "token_count_differs": None,
        }
    diverged = sorted(v.work.first_divergence.items())
    return {
        "isolation_after_verified": (
            None if v.isolation_after is None else v.isolation_after.verified
        ),
        "work_matched": v.work.matched,
        "work_diverged": ";".join(f"{agent}:{index}" for agent, index in diverged),
        "validity_flags": ";".join(v.flags),
        "cache_state": None if v.cache is None else v.cache.status,
        "token_count_differs": (None if v.token_counts is None else len(v.token_counts.differing)),
    }


def _phase_stats(calls: Sequence[CallRecord]) -> dict[str, Any]:
    ok = [c.server_metrics for c in calls if c.server_metrics is not None]
    return {
        "load_ms": _mean(mm.load_duration_ns / 1e6 for mm in ok if mm.load_duration_ns is not None),
        "prompt_eval_ms": _mean(
            mm.prompt_eval_duration_ns / 1e6 for mm in ok if mm.prompt_eval_duration_ns is not None
        ),
        "eval_count": sum(mm.eval_count for mm in ok) if ok else None,
    }


def _apis(r: RunRecord) -> dict[str, str]:
    """Server name -> the API the run measured it through."""
    return {s.name: s.api for s in r.topology.servers}


def agent_rows(r: RunRecord) -> list[dict[str, Any]]:
    rows = []
    key = _key(r)
    apis = _apis(r)
    metrics = {a.agent: a for a in r.metrics.agents}
    calls: dict[tuple[str, str], list[CallRecord]] = {}  # (agent, phase) -> calls, in order
    for c in r.calls:
        calls.setdefault((c.agent, c.phase), []).append(c)
    for info in r.topology.agents:
        a = metrics[info.name]
        solo = _phase_stats(calls.get((info.name, SOLO), []))
        conc = _phase_stats(calls.get((info.name, CONCURRENT), []))
        rows.append(
            {
                **key,
                "agent": info.name,
                "workload": info.workload,
                "server": info.server,
                "api": apis.get(info.server),
                "model": info.model,
                "options_json": _OPTIONS_JSON.encode(info.options),
                "n_calls": len(calls.get((info.name, CONCURRENT), [])),
                "solo_wall_s": a.solo_wall_s,
                "concurrent_wall_s": a.concurrent_wall_s,
                "slowdown": a.slowdown,
                "sequential_wall_s": a.sequential_wall_s,
                "sequential_slowdown": (
                    a.sequential_slowdown if r.protocol.baseline is not None else a.slowdown
                ),
                "solo_tps": a.solo_tps,
                "concurrent_tps": a.concurrent_tps,
                "solo_client_tps": a.solo_client_tps,
                "concurrent_client_tps": a.concurrent_client_tps,
                "solo_ttft_ms": a.solo_ttft_ms,
                "concurrent_ttft_ms": a.concurrent_ttft_ms,
                "solo_load_ms": solo["load_ms"],
                "concurrent_load_ms": conc["load_ms"],
                "solo_prompt_eval_ms": solo["prompt_eval_ms"],
                "concurrent_prompt_eval_ms": conc["prompt_eval_ms"],
                "solo_eval_count": solo["eval_count"],
                "concurrent_eval_count": conc["eval_count"],
                "solo_reloads": a.solo_reloads,
                "concurrent_reloads": a.concurrent_reloads,
                "solo_reload_s": a.solo_reload_s,
                "concurrent_reload_s": a.concurrent_reload_s,
            }
        )
    return rows


def _token_timing(c: CallRecord) -> dict[str, Any]:
    """Time per output token and the inter-token latencies of one call (ms)."""
    m, ttft = c.server_metrics, c.client_ttft_ns
    tpot = None
    if m is not None and ttft is not None and m.eval_count > 1:
        tpot = (c.client_wall_ns - ttft) / 1e6 / (m.eval_count - 1)
    gaps = c.inter_token_us
    itl = None if gaps is None else [g / 1000 for g in gaps]
    return {
        "tpot_ms": tpot,
        "n_text_chunks": None if c.token_arrivals_us is None else len(c.token_arrivals_us),
        "itl_ms": itl,
        "itl_mean_ms": sum(itl) / len(itl) if itl else None,
        "itl_max_ms": max(itl) if itl else None,
    }


def call_rows(r: RunRecord) -> list[dict[str, Any]]:
    rows = []
    key = _key(r)
    apis = _apis(r)
    for c in r.calls:
        m = c.server_metrics
        ttft = c.client_ttft_ns
        decode = c.client_decode
        rows.append(
            {
                **key,
                "phase": c.phase,
                "agent": c.agent,
                "call_index": c.call_index,
                "server": c.server,
                "url": c.url,
                "api": apis.get(c.server),
                "model": c.model,
                "endpoint": c.endpoint,
                "options_json": _OPTIONS_JSON.encode(c.options),
                "prompt_chars": c.prompt_chars,
                "t_sent_s": c.t_sent_ns / 1e9,
                "t_first_token_s": None if c.t_first_token_ns is None else c.t_first_token_ns / 1e9,
                "t_done_s": c.t_done_ns / 1e9,
                "client_ttft_ms": None if ttft is None else ttft / 1e6,
                "client_wall_ms": c.client_wall_ns / 1e6,
                "client_decode_tps": None if decode is None else decode[0] / (decode[1] / 1e9),
                **_token_timing(c),
                "total_ms": None if m is None else _ms(m.total_duration_ns),
                "load_ms": None if m is None else _ms(m.load_duration_ns),
                "prompt_eval_count": None if m is None else m.prompt_eval_count,
                "cached_prompt_tokens": None if m is None else m.cached_prompt_tokens,
                "prompt_eval_ms": None if m is None else _ms(m.prompt_eval_duration_ns),
                "eval_count": None if m is None else m.eval_count,
                "eval_count_source": None if m is None else m.eval_count_source,
                "eval_ms": None if m is None else _ms(m.eval_duration_ns),
                "server_tps": (
                    None
                    if m is None or m.eval_duration_ns is None or m.eval_duration_ns <= 0
                    else m.eval_count / (m.eval_duration_ns / 1e9)
                ),
                "done_reason": c.done_reason,
                "error_kind": None if c.error is None else c.error.kind,
                "error_message": None if c.error is None else c.error.message,
                "reconnects": c.reconnects,
            }
        )
    return rows


def failure_rows(
    failures_dir: str | Path, study: str | None = None
) -> tuple[list[dict[str, Any]], list[Problem]]:
    """The failures table's rows, and the reports left out because they cannot be read
    (or, given ``study``, belong to another study)."""
    rows: list[dict[str, Any]] = []
    skipped: list[Problem] = []
    for path in sorted(Path(failures_dir).glob("*.json")):
        try:
            f = load_json_object(path)
        except Unreadable as exc:
            skipped.append(skipped_report(path, str(exc)))
            continue
        reason = failure_report_problem(f, study)
        if reason is not None:
            skipped.append(skipped_report(path, reason))
            continue
        rows.append(
            {
                "study": f.get("study"),
                "config_id": f.get("config_id"),
                "run_index": f.get("run_index"),
                "attempt": f.get("attempt"),
                "at": _ts(f["at"]) if f.get("at") else None,
                "cause": f.get("cause"),
                "error_type": f.get("error_type"),
                "phase": f.get("phase"),
                "agent": f.get("agent"),
                "server_url": f.get("server_url"),
                "message": f.get("message"),
                "report_path": str(path),
            }
        )
    return rows, skipped


@dataclass(frozen=True)
class ChunkTables:
    """The rows of one chunk of run records, as Arrow tables with the tables' schemas."""

    runs: pa.Table
    agents: pa.Table
    calls: pa.Table
    #: what reading found, one per record of the chunk, in order (unreadable ones have no rows)
    facts: list[RecordFacts]


def read_chunk(record_paths: Sequence[str | Path]) -> ChunkTables:
    """Read, validate and tabulate these run records (in this order); a record that cannot
    be read gets no rows, only its facts saying why."""
    runs: list[dict[str, Any]] = []
    agents: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    facts: list[RecordFacts] = []
    with gc_paused():  # the chunk's records and rows hold no reference cycles
        for path in map(str, record_paths):
            try:
                record = load_run_record(path)
            except Unreadable as exc:
                facts.append(RecordFacts(path, None, unreadable=str(exc)))
                continue
            facts.append(record_facts(path, record))
            runs.append(run_row(record, path))
            agents.extend(agent_rows(record))
            calls.extend(call_rows(record))
        return ChunkTables(
            runs=to_table(runs, RUNS_SCHEMA),
            agents=to_table(agents, AGENTS_SCHEMA),
            calls=to_table(calls, CALLS_SCHEMA),
            facts=facts,
        )


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def worker_count(n_records: int, chunk_records: int = CHUNK_RECORDS) -> int:
    """Worker processes :func:`aggregate` uses for ``n_records`` records: one per available
    CPU, at most one per chunk; 1 (read in this process) for a single chunk and where
    ``fork`` is not the platform's safe default (everywhere but Linux)."""
    chunks = -(-n_records // chunk_records)
    if chunks < 2 or not sys.platform.startswith("linux"):
        return 1
    return min(chunks, available_cpus())


def _read_chunks(chunks: list[list[str]], workers: int) -> Iterator[ChunkTables]:
    """Each chunk's tables, in chunk order."""
    if workers <= 1:
        for chunk in chunks:
            yield read_chunk(chunk)
        return
    # fork, not spawn: a worker must not re-import the caller's __main__ (a Snakemake rule
    # script would aggregate again in every worker).
    context = multiprocessing.get_context("fork")
    prepare_reading()  # compiled once, here; the forked workers share it
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        try:
            yield from pool.map(read_chunk, chunks)
        except BaseException:  # a worker failed, or the caller stopped: read no more chunks
            pool.shutdown(wait=True, cancel_futures=True)
            raise


@contextmanager
def _staging(out_dir: Path) -> Iterator[Path]:
    """A private folder in ``out_dir`` (same file system: moving out of it is a rename) for
    the tables being written; removed, with whatever is left in it, at the end."""
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".aggregate-", dir=out_dir))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _write_record_tables(
    chunks: list[list[str]], workers: int, staged: dict[str, Path]
) -> list[RecordFacts]:
    """Tabulate every record into the staged runs/agents/calls tables; what reading found."""
    facts: list[RecordFacts] = []
    with (
        TableWriter(staged["runs"], RUNS_SCHEMA) as runs,
        TableWriter(staged["agents"], AGENTS_SCHEMA) as agents,
        TableWriter(staged["calls"], CALLS_SCHEMA) as calls,
    ):
        for part in _read_chunks(chunks, workers):
            facts.extend(part.facts)
            runs.write(part.runs)
            agents.write(part.agents)
            calls.write(part.calls)
    return facts


def aggregate(
    record_paths: Sequence[str | Path],
    out_dir: str | Path,
    failures_dir: str | Path | None = None,
    *,
    expected: Expected | None = None,
    chunk_records: int = CHUNK_RECORDS,
    workers: int | None = None,
) -> dict[str, Path]:
    """Read and check every run record; write runs/agents/calls/failures Parquet tables.

    ``expected``: what the study's inputs must be (each record in its place, measured under
    its config's current options, each config's forced-unload evidence readable); without
    it only what needs no study is checked (readable records, no run held twice). Any
    problem raises :class:`IntegrityError` listing every offending file, and nothing is
    written to ``out_dir``. Failure reports that cannot be read are left out and logged.

    ``workers``: processes reading the records (default :func:`worker_count`); the tables
    do not depend on it or on ``chunk_records``.
    """
    if chunk_records < 1:
        raise ValueError(f"chunk_records must be at least 1, not {chunk_records}")
    paths = [str(p) for p in record_paths]
    chunks = [paths[i : i + chunk_records] for i in range(0, len(paths), chunk_records)]
    if workers is None:
        workers = worker_count(len(paths), chunk_records)
    workers = max(1, min(workers, len(chunks)))
    out_dir = Path(out_dir)
    outputs = {name: out_dir / f"{name}.parquet" for name in TABLES}
    with _staging(out_dir) as staging:
        staged = {name: staging / path.name for name, path in outputs.items()}
        facts = _write_record_tables(chunks, workers, staged)
        problems = check_records(facts, expected)
        if expected is not None:
            problems += check_unload_files(expected)
        fails: list[dict[str, Any]] = []
        if failures_dir is not None:
            fails, skipped = failure_rows(
                failures_dir, None if expected is None else expected.study
            )
            for report in skipped:
                log.warning("failure report %s", report)
        if problems:
            raise IntegrityError(problems, out_dir)
        write_table(to_table(fails, FAILURES_SCHEMA), staged["failures"])
        for name, path in outputs.items():
            staged[name].replace(path)
    manifest = out_dir / INPUTS_MANIFEST
    write_json_atomic(manifest, inputs_manifest(facts))
    return {**outputs, "inputs": manifest}


def inputs_manifest(facts: Sequence[RecordFacts]) -> dict[str, Any]:
    """Which records the tables hold: each file, the run it holds, its config hash."""
    return {
        "kind": "mabench.tables.inputs",
        "n_records": len(facts),
        "records": [
            {
                "path": f.path,
                "config_id": f.holds.config_id if f.holds else None,
                "run_index": f.holds.run_index if f.holds else None,
                "config_hash": f.config_hash,
            }
            for f in facts
        ],
    }
