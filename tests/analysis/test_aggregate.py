"""Aggregation in chunks and worker processes writes the tables a single pass writes, and
only when every input passed its checks."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from msgspec.structs import replace

from mabench.analysis.aggregate import aggregate, worker_count
from mabench.analysis.integrity import Expected, IntegrityError
from mabench.datasets.synthetic import make_record, with_nulls
from mabench.measure.records import Validity, write_json_atomic, write_record
from mabench.measure.validity import WORK_MISMATCH, compare_work
from mabench.steps.rules import StudyPaths

TABLES = ("runs", "agents", "calls", "failures")


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Eleven real-shaped run records of several configs, one with a failed call."""
    root = tmp_path_factory.mktemp("records")
    paths = []
    for i in range(11):
        data = make_record(i * 7).to_json()
        if i == 4:
            call = data["calls"][1]
            call.update(
                t_first_token_ns=None,
                t_last_token_ns=None,
                server_metrics=None,
                done_reason=None,
                response_text="",
                error={
                    "kind": "http",
                    "message": "503",
                    "url": call["url"],
                    "phase": call["phase"],
                    "status": 503,
                },
            )
        path = root / data["config_id"] / f"run_{data['run_index']}.json"
        write_json_atomic(path, data)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def failures(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("failures")
    (root / "cfg001_run_2_attempt_1.json").write_text(
        json.dumps(
            {
                "study": "synthetic",
                "config_id": "cfg001",
                "run_index": 2,
                "attempt": 1,
                "at": "2026-01-05T09:00:00+00:00",
                "cause": "timeout",
                "phase": "concurrent",
                "message": "no answer",
            }
        )
    )
    return root


def _tables(out: Path) -> dict[str, object]:
    return {name: pq.read_table(out / f"{name}.parquet") for name in TABLES}


@pytest.mark.parametrize(("chunk_records", "workers"), [(3, 1), (3, 2), (4, 2), (1, 2)])
def test_chunks_and_workers_write_the_single_pass_tables(
    records: list[Path], failures: Path, tmp_path: Path, chunk_records: int, workers: int
) -> None:
    single = aggregate(
        records, tmp_path / "single", failures, chunk_records=len(records), workers=1
    )
    chunked = aggregate(
        records, tmp_path / "chunked", failures, chunk_records=chunk_records, workers=workers
    )
    assert set(single) == set(chunked) == {*TABLES, "inputs"}
    a, b = _tables(tmp_path / "single"), _tables(tmp_path / "chunked")
    manifest = json.loads(single["inputs"].read_text())
    assert manifest == json.loads(chunked["inputs"].read_text())
    assert [r["path"] for r in manifest["records"]] == [str(p) for p in records]
    assert manifest["n_records"] == len(records) and all(
        r["config_hash"] for r in manifest["records"]
    )
    for name in TABLES:
        assert a[name].equals(b[name]), name
    assert a["runs"].num_rows == len(records)
    assert a["runs"].column("record_path").to_pylist() == [str(p) for p in records]
    assert a["calls"].column("error_kind").to_pylist().count("http") == 1
    assert a["failures"].num_rows == 1


def test_no_records_give_empty_tables(tmp_path: Path) -> None:
    aggregate([], tmp_path)
    for name, table in _tables(tmp_path).items():
        assert table.num_rows == 0, name


def test_invalid_records_stop_it_and_leave_no_tables(records: list[Path], tmp_path: Path) -> None:
    bad = tmp_path / "bad" / "run_9.json"
    data = make_record(9).to_json()
    data["metrics"]["n_agents"] = 0
    write_json_atomic(bad, data)
    empty = tmp_path / "bad" / "run_10.json"
    empty.write_text("")
    paths = [*records[:5], bad, *records[5:], empty]
    with pytest.raises(IntegrityError) as err:
        aggregate(paths, tmp_path / "out", chunk_records=2, workers=2)
    assert [(p.path, p.reason) for p in err.value.problems] == [
        (str(bad), "run record invalid at $.metrics.n_agents: Expected `int` >= 1, got 0"),
        (str(empty), "empty file"),
    ]
    assert not any((tmp_path / "out").iterdir())


def tables_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def study_of(root: Path, records: list[Path]) -> tuple[list[Path], Expected]:
    """The records as results/scale/runs/<config>/run_<i>.json, with the study's unload files."""
    paths = StudyPaths.of("scale", root / "results")
    placed = []
    for src in records:
        config_id, run = src.parent.name, int(src.stem.removeprefix("run_"))
        dst = paths.record(config_id, run)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dst)
        placed.append(dst)
    configs = sorted({p.parent.name for p in placed})
    for config_id in configs:
        write_json_atomic(
            paths.unload(config_id), {"study": "scale", "config_id": config_id, "verified": True}
        )
    hashes = {
        c: json.loads(next(p for p in placed if p.parent.name == c).read_text())["environment"][
            "config_hash"
        ]
        for c in configs
    }
    return placed, Expected("scale", hashes, {c: paths.unload(c) for c in configs})


@pytest.mark.parametrize("workers", [1, 2])
def test_a_refused_study_leaves_the_tables_already_there_byte_identical(
    records: list[Path], failures: Path, tmp_path: Path, workers: int
) -> None:
    placed, expected = study_of(tmp_path, records)
    out = tmp_path / "results" / "scale" / "tables"
    aggregate(placed, out, failures, expected=expected, chunk_records=3, workers=workers)
    before = tables_bytes(out)
    assert set(before) == {*(f"{name}.parquet" for name in TABLES), "inputs.json"}

    moved = placed[0].parent / "run_99.json"
    placed[0].rename(moved)  # a record moved over another run's place
    stale = Expected(
        "scale", {**expected.config_hashes, placed[-1].parent.name: "0" * 64}, expected.unload_files
    )
    with pytest.raises(IntegrityError) as err:
        aggregate(
            [moved, *placed[1:]], out, failures, expected=stale, chunk_records=3, workers=workers
        )
    reasons = {Path(p.path).relative_to(tmp_path).as_posix(): p.reason for p in err.value.problems}
    assert reasons[moved.relative_to(tmp_path).as_posix()].startswith("holds ")
    assert all(r.startswith(("holds ", "stale: ")) for r in reasons.values())
    assert tables_bytes(out) == before


def test_an_unreadable_failure_report_is_logged_and_left_out(
    records: list[Path], failures: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    reports = tmp_path / "failures"
    shutil.copytree(failures, reports)
    cut = '{"study": "synthetic", "config_id": "cfg0'
    (reports / "cut.json").write_text(cut)
    (reports / "odd.json").write_text(json.dumps({"study": "synthetic", "run_index": "two"}))
    with caplog.at_level(logging.WARNING, logger="mabench"):
        aggregate(records[:2], tmp_path / "out", reports)
    failures_table = pq.read_table(tmp_path / "out" / "failures.parquet")
    assert failures_table.column("report_path").to_pylist() == [
        str(reports / "cfg001_run_2_attempt_1.json")
    ]
    assert [r.getMessage() for r in caplog.records] == [
        f"failure report {reports / 'cut.json'}: skipped, not valid JSON: cut short (the file "
        f"ends after {len(cut)} bytes, inside the JSON); it is left out of the failures table; "
        "delete it, or restore it from a backup",
        f"failure report {reports / 'odd.json'}: skipped, run_index is 'two', not a whole "
        "number; it is left out of the failures table; delete it, or restore it from a backup",
    ]


def test_worker_count() -> None:
    assert worker_count(0) == 1
    assert worker_count(10, chunk_records=10) == 1
    assert 1 <= worker_count(10_000, chunk_records=10) <= 10_000


def test_write_record_round_trip(tmp_path: Path) -> None:
    record = make_record(2)
    write_record(tmp_path / "r.json", record)
    aggregate([tmp_path / "r.json"], tmp_path / "t")
    runs = pq.read_table(tmp_path / "t" / "runs.parquet").to_pylist()
    assert runs[0]["config_id"] == record.config_id
    assert runs[0]["seed_efficiency"] == record.metrics.seed_efficiency
    for column in (
        "true_efficiency_excl_load",
        "solo_reloads",
        "concurrent_reloads",
        "solo_reload_s",
        "concurrent_reload_s",
    ):
        assert runs[0][column] == getattr(record.metrics, column), column
    agents = pq.read_table(tmp_path / "t" / "agents.parquet").to_pylist()
    assert [(a["agent"], a["concurrent_reloads"]) for a in agents] == [
        (m.agent, m.concurrent_reloads) for m in record.metrics.agents
    ]


def test_token_timing_columns(tmp_path: Path) -> None:
    data = make_record(3).to_json()
    first = data["calls"][0]
    first["token_arrivals_us"] = [120_000, 20_000, 0, 25_000]  # TTFT 120 ms, then 3 gaps
    data["calls"][1]["token_arrivals_us"] = None  # as a version-1 record
    path = tmp_path / "run.json"
    write_json_atomic(path, data)
    out = aggregate([path], tmp_path / "tables")
    calls = pq.read_table(out["calls"]).to_pylist()
    row = calls[0]
    assert row["n_text_chunks"] == 4
    assert row["itl_ms"] == [20.0, 0.0, 25.0]
    assert row["itl_mean_ms"] == 15.0 and row["itl_max_ms"] == 25.0
    m = first["server_metrics"]
    wall_ms = (first["t_done_ns"] - first["t_sent_ns"]) / 1e6
    ttft_ms = (first["t_first_token_ns"] - first["t_sent_ns"]) / 1e6
    assert row["tpot_ms"] == pytest.approx((wall_ms - ttft_ms) / (m["eval_count"] - 1))
    assert calls[1]["itl_ms"] is None and calls[1]["n_text_chunks"] is None
    assert calls[1]["tpot_ms"] is not None  # needs no arrivals


def test_the_api_and_what_it_did_not_report_reach_the_tables(tmp_path: Path) -> None:
    data = make_record(3).to_json()
    servers = data["topology"]["servers"]
    servers[-1]["api"] = "openai"
    openai_server = servers[-1]["name"]
    data["isolation"]["unavailable"] = [openai_server]
    for call in data["calls"]:
        if call["server"] == openai_server:
            call["server_metrics"].update(
                total_duration_ns=None,
                load_duration_ns=None,
                prompt_eval_count=None,
                prompt_eval_duration_ns=None,
                eval_duration_ns=None,
                eval_count_source="stream",
                prompt_eval_count_source=None,
            )
    path = tmp_path / "run_1.json"
    write_json_atomic(path, data)
    out = aggregate([path], tmp_path / "tables")
    runs = pq.read_table(out["runs"]).to_pylist()
    assert runs[0]["api"] == "ollama+openai"
    assert runs[0]["isolation_unavailable"] == openai_server
    agents = pq.read_table(out["agents"]).to_pylist()
    assert {a["server"]: a["api"] for a in agents}[openai_server] == "openai"
    calls = pq.read_table(out["calls"]).to_pylist()
    theirs = [c for c in calls if c["server"] == openai_server]
    assert theirs and all(c["api"] == "openai" for c in theirs)
    assert all(c["eval_count_source"] == "stream" and c["load_ms"] is None for c in theirs)
    assert all(c["server_tps"] is None and c["eval_count"] > 0 for c in theirs)
    others = [c for c in calls if c["server"] != openai_server]
    assert all(c["api"] == "ollama" for c in others)


def test_a_record_with_nulls_where_fields_are_nullable_is_aggregated(tmp_path: Path) -> None:
    """What servers that say less leave (no context length in /api/ps, no server durations, no
    thread count) is read and aggregated; the hand-written check raised TypeError on it."""
    record = with_nulls(make_record(7))
    write_record(tmp_path / "run_1.json", record)
    out = aggregate([tmp_path / "run_1.json"], tmp_path / "tables")
    runs = pq.read_table(out["runs"]).to_pylist()
    assert len(runs) == 1 and runs[0]["true_efficiency"] == record.metrics.true_efficiency
    calls = pq.read_table(out["calls"]).to_pylist()
    assert len(calls) == len(record.calls)
    assert all(c["load_ms"] is None and c["server_tps"] is None for c in calls)


def test_a_version_1_record_leaves_the_new_columns_null(tmp_path: Path) -> None:
    data = make_record(3).to_json()
    data["schema_version"] = 1
    for key in ("solo_reloads", "concurrent_reloads", "true_efficiency_excl_load"):
        del data["metrics"][key]
    for call in data["calls"]:
        del call["reconnects"], call["token_arrivals_us"]
    write_json_atomic(tmp_path / "r.json", data)
    aggregate([tmp_path / "r.json"], tmp_path / "t")
    runs = pq.read_table(tmp_path / "t" / "runs.parquet").to_pylist()
    assert runs[0]["solo_reloads"] is None and runs[0]["true_efficiency_excl_load"] is None
    assert runs[0]["true_efficiency"] == data["metrics"]["true_efficiency"]
    calls = pq.read_table(tmp_path / "t" / "calls.parquet").to_pylist()
    assert {c["reconnects"] for c in calls} == {None}
    assert {c["client_decode_tps"] for c in calls} == {None}


def test_work_columns_say_where_the_phases_parted(tmp_path: Path) -> None:
    record = make_record(4)
    calls = list(record.calls)
    i = next(k for k, c in enumerate(calls) if c.phase == "concurrent" and c.call_index == 1)
    calls[i] = replace(calls[i], response_text=calls[i].response_text + " (changed)")
    work = compare_work(calls)
    flagged = replace(
        record,
        calls=calls,
        validity=Validity(work=work, flags=[WORK_MISMATCH], isolation_after=None),
    )
    matched = replace(
        record,
        run_index=record.run_index + 1,
        validity=Validity(work=compare_work(record.calls), flags=[], isolation_after=None),
    )
    write_record(tmp_path / "a.json", flagged)
    write_record(tmp_path / "b.json", matched)
    aggregate([tmp_path / "a.json", tmp_path / "b.json"], tmp_path / "t")
    runs = pq.read_table(tmp_path / "t" / "runs.parquet").to_pylist()
    cols = [(r["work_matched"], r["work_diverged"], r["validity_flags"]) for r in runs]
    assert cols == [(False, f"{calls[i].agent}:1", "work_mismatch"), (True, "", "")]
