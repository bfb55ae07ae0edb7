"""Run records: defined once as Structs, read and written round trip, every rejected record
names the path in the JSON and what is wrong there, and the published JSON schema is the one
the Structs generate."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import pytest

from mabench.datasets.synthetic import make_record, with_nulls
from mabench.measure.records import (
    READABLE_VERSIONS,
    SCHEMA_VERSION,
    RecordError,
    RunRecord,
    parse_record,
    read_record,
    record_schema,
    validate_record,
    write_json_atomic,
    write_record,
)
from mabench.measure.schema_file import SCHEMA_FILE, schema_text

ROOT = Path(__file__).resolve().parents[2]


def _with_failed_call(data: dict[str, Any]) -> dict[str, Any]:
    """A valid record whose first call failed: no tokens, no server metrics, an error."""
    data = copy.deepcopy(data)
    call = data["calls"][0]
    call.update(
        t_first_token_ns=None,
        t_last_token_ns=None,
        server_metrics=None,
        done_reason=None,
        response_text="",
        error={
            "kind": "timeout",
            "message": "no answer",
            "url": call["url"],
            "phase": "solo",
            "status": None,
        },
    )
    return data


def _set(path: list[Any], value: Any) -> Any:
    def apply(d: dict[str, Any]) -> None:
        for key in path[:-1]:
            d = d[key]
        d[path[-1]] = value

    return apply


def _delete(path: list[Any]) -> Any:
    def apply(d: dict[str, Any]) -> None:
        for key in path[:-1]:
            d = d[key]
        del d[path[-1]]

    return apply


#: (how a record is broken, the message that must say so)
BROKEN = [
    (_set(["calls", 3, "t_sent_ns"], "12"), "at $.calls[3].t_sent_ns: Expected `int`, got `str`"),
    (_set(["calls", 1, "chunks"], -1), "at $.calls[1].chunks: Expected `int` >= 0, got -1"),
    (_set(["phases", 0, "phase"], "warmup"), "at $.phases[0].phase: Invalid enum value 'warmup'"),
    (
        _delete(["metrics", "seed_speedup"]),
        "at $.metrics: Object missing required field `seed_speedup`",
    ),
    (_set(["protocol", "surprise"], 1), "at $.protocol: Object contains unknown field `surprise`"),
    (
        _set(["calls", 2, "server_metrics"], {"eval_count": 3}),
        "at $.calls[2].server_metrics: Object missing required field `total_duration_ns`",
    ),
    (
        _set(["metrics", "agents", 1, "solo_tps"], True),
        "at $.metrics.agents[1].solo_tps: Expected `float | null`, got `bool`",
    ),
    (_set(["schema_version"], 4), "at $.schema_version: Invalid enum value 4"),
    (_set(["topology", "agents", 0], "x"), "at $.topology.agents[0]: Expected `object`, got `str`"),
    (
        _set(["protocol", "phase_order"], ["solo", "solo"]),
        "at $.protocol: phase_order ['solo', 'solo'] names a phase twice",
    ),
    (_set(["protocol", "phase_order"], []), "at $.protocol.phase_order: Expected `array` of"),
    (_set(["metrics", "n_agents"], 0), "at $.metrics.n_agents: Expected `int` >= 1, got 0"),
    (_delete(["calls", 0, "error"]), None),  # optional: a record without it is valid
]


@pytest.mark.parametrize("i", [0, 4, 17])
def test_valid_records_read_back_as_written(i: int) -> None:
    schema = jsonschema.Draft202012Validator(record_schema())
    for data in (make_record(i).to_json(), _with_failed_call(make_record(i).to_json())):
        record = RunRecord.from_json(data)
        assert record.to_json() == data
        assert parse_record(json.dumps(data).encode()) == record
        schema.validate(data)  # the published schema says the same


@pytest.mark.parametrize(("damage", "message"), BROKEN)
def test_a_rejected_record_names_the_path_and_what_is_wrong(damage: Any, message: str) -> None:
    data = make_record(3).to_json()
    damage(data)
    valid_by_schema = jsonschema.Draft202012Validator(record_schema()).is_valid(data)
    if message is None:
        validate_record(data)
        assert valid_by_schema
        return
    assert not valid_by_schema
    for check in (validate_record, lambda d: parse_record(json.dumps(d).encode())):
        with pytest.raises(RecordError) as err:
            check(data)
        assert str(err.value).startswith(f"run record invalid {message}"), str(err.value)


def test_read_record_names_the_file_and_the_path(tmp_path: Path) -> None:
    data = make_record(1).to_json()
    data["calls"][5]["t_done_ns"] = None
    path = tmp_path / "run_1.json"
    write_json_atomic(path, data)
    with pytest.raises(
        RecordError, match=r"run_1\.json: run record invalid at \$\.calls\[5\]\.t_done_ns: "
    ):
        read_record(path)
    path.write_text("{")
    with pytest.raises(RecordError, match=r"run_1\.json: not valid JSON"):
        read_record(path)


def test_a_record_built_in_code_is_checked_before_it_is_written(tmp_path: Path) -> None:
    record = make_record(2)
    calls = list(record.calls)
    calls[0] = msgspec.structs.replace(calls[0], chunks=-3)
    path = tmp_path / "run_1.json"
    with pytest.raises(RecordError, match=r"\$\.calls\[0\]\.chunks: Expected `int` >= 0, got -3"):
        write_record(path, msgspec.structs.replace(record, calls=calls))
    assert list(tmp_path.iterdir()) == []


def test_null_in_nullable_bounded_fields_round_trips(tmp_path: Path) -> None:
    """The case the hand-written check crashed on (``None < 0``: a TypeError after both phases
    were measured, and no record): an /api/ps model without context_length, server metrics
    the server left out, no thread count or CPU quota known."""
    record = with_nulls(make_record(6))
    path = tmp_path / "run_1.json"
    write_record(path, record)
    back = read_record(path)
    assert back == record
    assert back.validity is not None and back.validity.isolation_after is not None
    assert {
        p.context_length for ps in back.validity.isolation_after.loaded.values() for p in ps
    } == {None}
    assert back.calls[0].server_metrics is not None
    assert back.calls[0].server_metrics.eval_duration_ns is None
    assert back.topology.servers[0].threads is None


def test_a_version_1_record_still_reads(tmp_path: Path) -> None:
    assert READABLE_VERSIONS == (1, 2, 3) and SCHEMA_VERSION == 3
    data = make_record(5).to_json()
    assert data["schema_version"] == SCHEMA_VERSION
    old = {**copy.deepcopy(data), "schema_version": 1}
    for call in old["calls"]:  # version 1 kept no arrivals or reconnects
        del call["token_arrivals_us"], call["reconnects"]
    del old["validity"], old["environment"]["cpus_available"]
    path = tmp_path / "run_1.json"
    write_json_atomic(path, old)
    record = read_record(path)
    assert record.schema_version == 1
    assert record.calls[0].token_arrivals_us is None and record.validity is None
    assert record == RunRecord.from_json(old)


def test_a_version_2_record_reads_with_no_baseline_of_its_own() -> None:
    # Version 2 measured no sequential phase: its true_speedup is the solo phase's, which the
    # analysis reads as interference (mabench.analysis.aggregate)
    data = make_record(6).to_json()
    old = {**copy.deepcopy(data), "schema_version": 2}
    for key in ("sequential_sum_s", "interference_speedup", "interference_efficiency"):
        old["metrics"].pop(key, None)
    old["protocol"].pop("baseline", None)
    if old["validity"]:
        old["validity"].pop("sequential_work", None)
    record = RunRecord.from_json(old)
    assert record.protocol.baseline is None and record.metrics.interference_speedup is None


def test_token_arrivals_are_optional_and_checked() -> None:
    data = make_record(2).to_json()
    for call in data["calls"]:
        call["token_arrivals_us"] = [150_000, 20_000, 0, 21_500]
    record = RunRecord.from_json(data)
    assert record.calls[0].inter_token_us == [20_000, 0, 21_500]
    assert record.to_json() == data
    del data["calls"][1]["token_arrivals_us"]  # as in a version-1 record
    assert RunRecord.from_json(data).calls[1].inter_token_us is None
    data["calls"][0]["token_arrivals_us"] = [5, -1]
    with pytest.raises(RecordError, match=r"\$\.calls\[0\]\.token_arrivals_us\[1\]"):
        validate_record(data)


def test_fields_of_the_openai_path_are_optional_and_round_trip(tmp_path: Path) -> None:
    data = make_record(5).to_json()
    old = copy.deepcopy(data)
    for server in old["topology"]["servers"]:
        del server["api"]
    del old["isolation"]["unavailable"]
    for call in old["calls"]:
        if call["server_metrics"] is not None:
            del call["server_metrics"]["eval_count_source"]
            del call["server_metrics"]["prompt_eval_count_source"]
    assert RunRecord.from_json(old) == RunRecord.from_json(data)
    assert RunRecord.from_json(old).topology.servers[0].api == "ollama"

    openai = copy.deepcopy(data)
    for server in openai["topology"]["servers"]:
        server["api"] = "openai"
    openai["isolation"]["unavailable"] = [s["name"] for s in openai["topology"]["servers"]]
    openai["loads"][0]["load_duration_ns"] = None
    metrics = openai["calls"][0]["server_metrics"]
    metrics.update(
        total_duration_ns=None,
        load_duration_ns=None,
        prompt_eval_count=None,
        prompt_eval_duration_ns=None,
        eval_duration_ns=None,
        eval_count_source="stream",
        prompt_eval_count_source=None,
    )
    path = tmp_path / "run_1.json"
    write_json_atomic(path, openai)
    record = read_record(path)
    assert record.to_json() == openai
    assert record.calls[0].server_metrics.eval_count_source == "stream"
    bad = copy.deepcopy(openai)
    bad["calls"][0]["server_metrics"]["eval_count_source"] = "guess"
    with pytest.raises(RecordError, match=r"server_metrics\.eval_count_source: Invalid enum"):
        RunRecord.from_json(bad)


def test_the_committed_schema_is_the_one_the_structs_generate() -> None:
    assert SCHEMA_FILE.read_text(encoding="utf-8") == schema_text(), (
        "run `python -m mabench.measure.schema_file` to rewrite the schema from the Structs"
    )
    linked = ROOT / "workflow" / "schemas" / "run_record.schema.json"
    assert linked.resolve() == SCHEMA_FILE
