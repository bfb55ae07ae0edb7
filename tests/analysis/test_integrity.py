"""The integrity checks name every file the analysis cannot use, why, and what to do."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from mabench.analysis import integrity
from mabench.analysis.integrity import (
    Expected,
    IntegrityError,
    RecordFacts,
    RunKey,
    Unreadable,
    check_records,
    check_unload_files,
    failure_report_problem,
    key_of_path,
    load_json_object,
    load_run_record,
    place_of,
    readable_schema_versions,
    record_facts,
    versions_read,
)
from mabench.datasets.synthetic import make_record
from mabench.measure.records import write_json_atomic
from mabench.steps.rules import StudyPaths

STUDY = "scale"  # make_record(i): study "scale", config cfg{i % 100:03d}, run i // 100 + 1
RECORDS = (0, 1, 100, 101)  # cfg000 and cfg001, runs 1 and 2
HASHES = {"cfg000": f"{0:064x}", "cfg001": f"{1:064x}"}  # make_record's config_hash


@pytest.fixture
def study(tmp_path: Path) -> StudyPaths:
    """results/scale/ with the records of two configs x two runs and their unload files."""
    paths = StudyPaths.of(STUDY, tmp_path / "results")
    for i in RECORDS:
        record = make_record(i)
        write_json_atomic(paths.record(record.config_id, record.run_index), record.to_json())
    for config_id in HASHES:
        write_json_atomic(
            paths.unload(config_id),
            {"study": STUDY, "config_id": config_id, "verified": True, "loaded_after": {}},
        )
    return paths


def record_files(paths: StudyPaths) -> list[str]:
    return [str(paths.record(c, r)) for c in HASHES for r in (1, 2)]


def facts_of(files: list[str]) -> list[RecordFacts]:
    facts = []
    for path in files:
        try:
            facts.append(record_facts(path, load_run_record(path)))
        except Unreadable as exc:
            facts.append(RecordFacts(path, None, unreadable=str(exc)))
    return facts


def expected(paths: StudyPaths, **hashes: str) -> Expected:
    unloads = {c: paths.unload(c) for c in HASHES}
    return Expected(STUDY, {**HASHES, **hashes}, unloads)


def problems(paths: StudyPaths, **hashes: str) -> dict[str, str]:
    found = check_records(facts_of(record_files(paths)), expected(paths, **hashes))
    return {Path(p.path).relative_to(paths.root).as_posix(): str(p) for p in found}


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


def unreadable_reason(path: Path) -> str:
    with pytest.raises(Unreadable) as err:
        load_run_record(path)
    return str(err.value)


def test_a_valid_record_reads_back_as_written(study: StudyPaths) -> None:
    assert load_run_record(study.record("cfg001", 2)) == make_record(101)


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda text: "", r"^empty file$"),
        (lambda text: "\n  \n", r"^empty file \(only white space\)$"),
        (lambda text: text[:500], r"^not valid JSON: cut short \(the file ends after 500 bytes"),
        (lambda text: text[:-3], r"^not valid JSON: cut short"),
        (lambda text: text.replace('"study"', "study", 1), r"^not valid JSON: Expecting .* line 2"),
        (lambda text: "[1, 2]", r"^not a JSON object but a JSON array$"),
        (lambda text: "null", r"^not a JSON object but a JSON null$"),
    ],
    ids=["empty", "blank", "truncated", "last-bytes-lost", "bad-key", "array", "null"],
)
def test_damaged_json_is_named_with_what_is_wrong(study: StudyPaths, damage, reason) -> None:
    path = study.record("cfg000", 1)
    path.write_text(damage(path.read_text()))
    assert re.search(reason, unreadable_reason(path)), unreadable_reason(path)


def test_not_utf8_missing_and_a_folder_are_named(study: StudyPaths) -> None:
    path = study.record("cfg000", 1)
    path.write_bytes(b'{"study": "\xff\xfe"}')
    assert unreadable_reason(path) == "not UTF-8 text"
    assert unreadable_reason(study.record("cfg000", 9)) == "missing"
    assert unreadable_reason(study.root / "runs" / "cfg000") == "a folder, not a file"


def rewrite(path: Path, **changes: object) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def test_a_record_of_another_schema_version_says_which_versions_are_read(
    study: StudyPaths,
) -> None:
    path = study.record("cfg000", 1)
    rewrite(path, schema_version=99)
    reason = unreadable_reason(path)
    assert reason.startswith("schema version 99, but this mabench reads version")
    assert all(str(v) in reason for v in readable_schema_versions())
    assert versions_read() in reason
    rewrite(path, schema_version="1")
    assert unreadable_reason(path).startswith("schema version '1'")


def test_a_failure_report_among_the_runs_is_no_run_record(study: StudyPaths) -> None:
    path = study.record("cfg000", 1)
    path.write_text(json.dumps({"kind": "mabench.failure", "study": STUDY}))
    assert unreadable_reason(path) == (
        "not a run record (its kind is 'mabench.failure', not 'mabench.run')"
    )


def test_a_schema_invalid_record_names_the_path_in_the_json(study: StudyPaths) -> None:
    path = study.record("cfg000", 1)
    data = json.loads(path.read_text())
    data["metrics"]["n_agents"] = 0
    path.write_text(json.dumps(data))
    assert unreadable_reason(path) == (
        "run record invalid at $.metrics.n_agents: Expected `int` >= 1, got 0"
    )


@pytest.mark.parametrize(
    ("versions", "words"),
    [((1,), "version 1"), ((1, 2), "versions 1 and 2"), ((1, 2, 3), "versions 1, 2 and 3")],
)
def test_the_versions_read_are_said_in_words(
    monkeypatch: pytest.MonkeyPatch, versions: tuple[int, ...], words: str
) -> None:
    monkeypatch.setattr(integrity, "readable_schema_versions", lambda: versions)
    assert versions_read() == words


def test_load_json_object_reads_any_object(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text('{"a": [1]}')
    assert load_json_object(path) == {"a": [1]}


# ---------------------------------------------------------------------------------------------
# Where a record belongs
# ---------------------------------------------------------------------------------------------


def test_the_place_of_a_run_is_the_pipelines_record_path(tmp_path: Path) -> None:
    paths = StudyPaths.of("s", tmp_path / "results")
    key = RunKey("s", "test004", 12)
    assert key_of_path(paths.record("test004", 12)) == key
    assert place_of(key, paths.record("other", 1)) == paths.record("test004", 12)
    assert key_of_path("results/s/runs/test004/run_012.json") is None
    assert key_of_path("results/s/unload/test004.json") is None
    assert key_of_path("run_1.json") is None


def test_records_in_place_under_the_current_options_pass(study: StudyPaths) -> None:
    assert problems(study) == {}
    assert check_unload_files(expected(study)) == []


def test_a_copy_over_another_config_is_named_as_a_second_copy(study: StudyPaths) -> None:
    shutil.copy(study.record("cfg000", 1), study.record("cfg001", 1))
    original = study.record("cfg000", 1)
    assert problems(study) == {
        "runs/cfg001/run_1.json": f"{study.record('cfg001', 1)}: a second copy of cfg000 run 1 "
        f"of study 'scale' (its own record is {original}), not cfg001 run 1 of study 'scale'; "
        "delete it to have cfg001 run 1 measured again (the original stays)"
    }


def test_a_copy_over_another_run_of_the_same_config_is_named(study: StudyPaths) -> None:
    shutil.copy(study.record("cfg000", 1), study.record("cfg000", 2))
    (line,) = problems(study).values()
    assert "a second copy of cfg000 run 1" in line
    assert "delete it to have cfg000 run 2 measured again" in line


def test_a_record_moved_to_another_folder_is_told_where_it_belongs(study: StudyPaths) -> None:
    shutil.move(study.record("cfg000", 1), study.record("cfg001", 1))
    files = [f for f in record_files(study) if f != str(study.record("cfg000", 1))]
    found = check_records(facts_of(files), expected(study))
    assert [str(p) for p in found] == [
        f"{study.record('cfg001', 1)}: holds cfg000 run 1 of study 'scale', not cfg001 run 1 "
        "of study 'scale' (copied or moved here?); move it back to "
        f"{study.record('cfg000', 1)}, or delete it to have cfg001 run 1 measured again"
    ]


def test_swapped_records_are_both_named(study: StudyPaths) -> None:
    a, b = study.record("cfg000", 2), study.record("cfg001", 2)
    tmp = a.with_suffix(".swap")
    a.rename(tmp)
    b.rename(a)
    tmp.rename(b)
    found = problems(study)
    assert set(found) == {"runs/cfg000/run_2.json", "runs/cfg001/run_2.json"}
    assert f"move it back to {b}" in found["runs/cfg000/run_2.json"]
    assert f"move it back to {a}" in found["runs/cfg001/run_2.json"]


def test_a_record_of_another_study_is_named(study: StudyPaths) -> None:
    rewrite(study.record("cfg000", 2), study="other")
    (line,) = problems(study).values()
    assert "holds cfg000 run 2 of study 'other', not cfg000 run 2 of study 'scale'" in line
    assert "move it back to " + str(study.root.parent / "other" / "runs" / "cfg000") in line


def test_a_record_measured_under_other_options_is_stale(study: StudyPaths) -> None:
    now = "ab" * 32
    found = problems(study, cfg001=now)
    assert set(found) == {"runs/cfg001/run_1.json", "runs/cfg001/run_2.json"}
    line = found["runs/cfg001/run_2.json"]
    assert "stale: measured under other options than config cfg001 has now" in line
    assert f"(its config hash {HASHES['cfg001'][:12]}…, the config's now {now[:12]}…" in line
    assert "--rerun-triggers mtime" in line
    assert "delete it to have it measured again under the current options" in line


def test_every_problem_is_listed_once_in_one_message(study: StudyPaths) -> None:
    study.record("cfg000", 1).write_text("")
    shutil.copy(study.record("cfg001", 1), study.record("cfg001", 2))
    found = check_records(facts_of(record_files(study)), expected(study))
    assert [Path(p.path).name for p in found] == ["run_1.json", "run_2.json"]
    message = str(IntegrityError(found, study.tables))
    lines = message.splitlines()
    assert lines[0] == (
        f"The analysis refused 2 input files; nothing was written to {study.tables} "
        "(tables already there are those of the last successful aggregate):"
    )
    assert lines[1] == (
        f"  {study.record('cfg000', 1)}: empty file; delete it to have cfg000 run 1 measured "
        "again, or restore it from a backup"
    )
    assert lines[2].startswith(f"  {study.record('cfg001', 2)}: a second copy of cfg001 run 1")
    assert lines[3] == "Do what each line says, then run snakemake again."


def test_without_a_study_two_files_holding_one_run_are_both_named(study: StudyPaths) -> None:
    copy = study.root / "elsewhere" / "copy.json"
    copy.parent.mkdir()
    shutil.copy(study.record("cfg000", 1), copy)
    files = [*record_files(study), str(copy)]
    found = check_records(facts_of(files), None)
    assert [p.path for p in found] == [str(study.record("cfg000", 1)), str(copy)]
    assert found[0].reason == f"holds cfg000 run 1 of study 'scale', and so does {copy}"
    assert found[1].remedy == "keep one: delete the others, or move each to where it belongs"
    assert check_records(facts_of(record_files(study)), None) == []


def test_with_a_study_a_file_outside_its_runs_folder_is_named(study: StudyPaths) -> None:
    stray = study.root / "backup" / "run_1.json"
    stray.parent.mkdir()
    shutil.copy(study.record("cfg000", 1), stray)
    found = check_records(facts_of([str(stray)]), expected(study))
    assert [p.reason for p in found] == [
        "not where a run record of study 'scale' belongs (scale/runs/<config>/run_<i>.json)"
    ]


# ---------------------------------------------------------------------------------------------
# Forced-unload evidence and failure reports
# ---------------------------------------------------------------------------------------------


def test_unload_files_are_named_when_unreadable_misplaced_or_unverified(
    study: StudyPaths,
) -> None:
    study.unload("cfg000").write_text('{"study": "scale", "config_id": "cfg0')
    # files of configs the study does not have are not its evidence: not read
    study.unload("cfg000").with_name("gone.json").write_text("")
    write_json_atomic(study.unload("cfg001"), {"study": STUDY, "config_id": "cfg000"})
    found = check_unload_files(expected(study))
    assert [(Path(p.path).name, p.reason) for p in found] == [
        (
            "cfg000.json",
            "not valid JSON: cut short (the file ends after 37 bytes, inside the JSON)",
        ),
        (
            "cfg001.json",
            "the forced unload of 'cfg000' of study 'scale', not of 'cfg001' of study 'scale'",
        ),
    ]
    assert found[0].remedy == (
        "delete it to have the forced unload before cfg000 done again (Snakemake then measures "
        "the runs of cfg000 again, as they follow it), or restore it from a backup"
    )
    write_json_atomic(
        study.unload("cfg001"), {"study": STUDY, "config_id": "cfg001", "verified": False}
    )
    study.unload("cfg000").unlink()
    assert [p.reason for p in check_unload_files(expected(study))] == [
        "missing",
        "does not say the unload was verified (verified: False)",
    ]


REPORT = {
    "kind": "mabench.failure",
    "study": STUDY,
    "config_id": "cfg000",
    "run_index": 2,
    "attempt": 1,
    "at": "2026-01-05T09:00:00+00:00",
    "cause": "timeout",
    "message": "no answer",
}


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({}, None),
        ({"kind": None, "phase": None}, None),  # reports written before kinds: no kind key
        ({"kind": "mabench.run"}, "not a failure report (its kind is 'mabench.run')"),
        ({"run_index": "2"}, "run_index is '2', not a whole number"),
        ({"attempt": True}, "attempt is True, not a whole number"),
        ({"message": ["x"]}, "message is ['x'], not a string"),
        ({"at": "yesterday"}, "at is 'yesterday', not an ISO 8601 time"),
        ({"study": "other"}, "a failure of study 'other', not of 'scale'"),
    ],
)
def test_failure_reports_that_cannot_be_counted_say_why(changes: dict, reason: str | None) -> None:
    report = {k: v for k, v in {**REPORT, **changes}.items() if v is not None}
    assert failure_report_problem(report, STUDY) == reason
