"""Reading run records: the compiled validator decides like the reference validator and
gives its message; the cached builders rebuild the same dataclasses as the type hints do."""

from __future__ import annotations

import copy
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import jsonschema
import pytest

from mabench.datasets.synthetic import make_record
from mabench.measure.records import (
    READABLE_VERSIONS,
    SCHEMA_VERSION,
    RecordError,
    RunRecord,
    read_record,
    record_schema,
    validate_record,
    write_json_atomic,
)


def _reference_message(data: dict[str, Any]) -> str | None:
    """The message the library gave before the compiled validator (first error by path)."""
    validator = jsonschema.Draft202012Validator(record_schema())
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    if not errors:
        return None
    where = "/".join(str(p) for p in errors[0].absolute_path) or "(root)"
    return f"run record invalid at {where}: {errors[0].message}"


def _reference_build(tp: Any, value: Any) -> Any:
    """The library's former rebuild: ``get_type_hints`` for every dataclass instance."""
    if value is None:
        return None
    origin = get_origin(tp)
    if origin is list:
        (item,) = get_args(tp)
        return [_reference_build(item, v) for v in value]
    if origin is dict:
        _, item = get_args(tp)
        return {k: _reference_build(item, v) for k, v in value.items()}
    args = [a for a in get_args(tp) if a is not type(None)]
    if args and origin is not None and len(args) == 1:
        return _reference_build(args[0], value)
    if is_dataclass(tp):
        hints = get_type_hints(tp)
        return tp(
            **{
                f.name: _reference_build(hints[f.name], value[f.name])
                for f in fields(tp)
                if f.name in value
            }
        )
    return value


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
        error={"kind": "timeout", "message": "no answer", "url": call["url"], "phase": "solo"},
    )
    call["error"]["status"] = None
    return data


def _mutations() -> list[tuple[str, Any]]:
    """(what, how to break a record): each must name the path that is wrong."""

    def set_at(path: list[Any], value: Any) -> Any:
        def apply(d: dict[str, Any]) -> None:
            target = d
            for key in path[:-1]:
                target = target[key]
            target[path[-1]] = value

        return apply

    def delete(path: list[Any]) -> Any:
        def apply(d: dict[str, Any]) -> None:
            target = d
            for key in path[:-1]:
                target = target[key]
            del target[path[-1]]

        return apply

    return [
        ("string for an integer", set_at(["calls", 3, "t_sent_ns"], "12")),
        ("negative count", set_at(["calls", 1, "chunks"], -1)),
        ("unknown phase", set_at(["phases", 0, "phase"], "warmup")),
        ("missing key", delete(["metrics", "seed_speedup"])),
        ("extra key", set_at(["protocol", "surprise"], 1)),
        ("bad server metrics", set_at(["calls", 2, "server_metrics"], {"eval_count": 3})),
        ("boolean for a number", set_at(["metrics", "agents", 1, "solo_tps"], True)),
        ("wrong schema version", set_at(["schema_version"], 3)),
        ("not an object", set_at(["topology", "agents", 0], "collector")),
    ]


@pytest.mark.parametrize("i", [0, 4, 17])
def test_valid_records_pass_and_rebuild_as_before(i: int) -> None:
    for data in (make_record(i).to_json(), _with_failed_call(make_record(i).to_json())):
        assert _reference_message(data) is None
        validate_record(data)
        record = RunRecord.from_json(data)
        assert record == _reference_build(RunRecord, data)
        assert record.to_json() == data


@pytest.mark.parametrize(("what", "mutate"), _mutations(), ids=[m[0] for m in _mutations()])
def test_compiled_validator_rejects_with_the_reference_message(what: str, mutate: Any) -> None:
    data = make_record(3).to_json()
    mutate(data)
    expected = _reference_message(data)
    assert expected is not None, what
    with pytest.raises(RecordError) as err:
        validate_record(data)
    assert str(err.value) == expected


def test_read_record_names_the_file_and_the_path(tmp_path: Path) -> None:
    data = make_record(1).to_json()
    data["calls"][5]["t_done_ns"] = None
    path = tmp_path / "run_1.json"
    write_json_atomic(path, data)
    with pytest.raises(RecordError, match=r"run_1\.json: run record invalid at calls/5/t_done_ns"):
        read_record(path)


def test_a_version_1_record_still_reads(tmp_path: Path) -> None:
    assert READABLE_VERSIONS == (1, 2) and SCHEMA_VERSION == 2
    data = make_record(5).to_json()
    assert data["schema_version"] == SCHEMA_VERSION
    old = {**copy.deepcopy(data), "schema_version": 1}
    path = tmp_path / "run_1.json"
    write_json_atomic(path, old)
    record = read_record(path)
    assert record.schema_version == 1
    assert record == RunRecord.from_json({**data, "schema_version": 1})


def test_token_arrivals_are_optional_and_checked() -> None:
    data = make_record(2).to_json()
    for call in data["calls"]:
        call["token_arrivals_us"] = [150_000, 20_000, 0, 21_500]
    validate_record(data)
    record = RunRecord.from_json(data)
    assert record.calls[0].inter_token_us == [20_000, 0, 21_500]
    assert record.to_json() == data
    del data["calls"][1]["token_arrivals_us"]  # as in a version-1 record
    assert RunRecord.from_json(data).calls[1].inter_token_us is None
    data["calls"][0]["token_arrivals_us"] = [5, -1]
    with pytest.raises(RecordError, match="calls/0/token_arrivals_us/1"):
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
    with pytest.raises(RecordError, match="eval_count_source"):
        bad = copy.deepcopy(openai)
        bad["calls"][0]["server_metrics"]["eval_count_source"] = "guess"
        RunRecord.from_json(bad)
