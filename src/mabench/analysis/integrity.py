"""Every file the analysis reads proves it belongs where it is, or the analysis refuses it.

A run record is used only when

- it can be read: a non-empty file of valid JSON, a run record (``kind``) of a schema version
  this mabench reads, valid as a run record (:mod:`mabench.measure.records`: the path in the
  JSON and what is wrong there);
- it holds the run its path names: ``<results>/<study>/runs/<config>/run_<i>.json`` holds run
  ``i`` of config ``<config>`` of study ``<study>`` (a record copied or moved to another
  folder, or over another run, does not);
- no other file holds the same (study, config, run);
- it was measured under the options its config has now: its ``environment.config_hash``
  equals the current config's fingerprint (:meth:`mabench.config.Study.config_hash`). A record
  kept after the options changed (``--rerun-triggers mtime``) is stale.

A config's forced-unload evidence (``unload/<config>.json``) must be a readable JSON object
of that study and config that says the unload was verified. A failure report that cannot be
read is left out (:func:`failure_report_problem` says why) and never stops the analysis.

The checks are plain functions over what reading found (:class:`RecordFacts`); each returns
every :class:`Problem`, so one :class:`IntegrityError` names every offending file, why, and
what to do about it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from mabench.measure.records import (
    READABLE_VERSIONS,
    RECORD_KIND,
    RecordError,
    RunRecord,
    parse_record,
)

RUNS_DIR = "runs"
#: a run record's file name; run indexes are written without leading zeros
_RUN_FILE = re.compile(r"run_([1-9][0-9]*)\.json")
FAILURE_KIND = "mabench.failure"
#: fields of a failure report the failures table reads, and the JSON types each may have
_FAILURE_FIELDS: dict[str, tuple[type, ...]] = {
    "study": (str,),
    "config_id": (str,),
    "run_index": (int,),
    "attempt": (int,),
    "at": (str,),
    "cause": (str,),
    "error_type": (str,),
    "phase": (str,),
    "agent": (str,),
    "server_url": (str,),
    "message": (str,),
}


class Unreadable(ValueError):
    """A file that holds no usable JSON document of the expected kind; the message says why."""


class IntegrityError(ValueError):
    """Input files the analysis refuses. The message lists every one: path, why, what to do."""

    def __init__(self, problems: Sequence[Problem], tables_dir: str | Path) -> None:
        self.problems = tuple(problems)
        super().__init__(refusal_message(self.problems, tables_dir))


@dataclass(frozen=True, order=True)
class RunKey:
    """Which run a record is: study, config and run index."""

    study: str
    config_id: str
    run_index: int

    def __str__(self) -> str:
        return f"{self.config_id} run {self.run_index} of study {self.study!r}"


@dataclass(frozen=True)
class RecordFacts:
    """What reading one run record file found: the run it holds and the fingerprint of the
    options it was measured under, or why it could not be read."""

    path: str
    holds: RunKey | None
    config_hash: str | None = None
    unreadable: str | None = None


@dataclass(frozen=True)
class Expected:
    """What the inputs of one study's analysis must be.

    ``config_hashes``: config id -> fingerprint of that config as it is now
    (:meth:`mabench.config.Study.config_hash`); ``unload_files``: config id -> its forced-unload
    evidence (``results/<study>/unload/<config>.json``).
    """

    study: str
    config_hashes: Mapping[str, str]
    unload_files: Mapping[str, str | Path] = field(default_factory=dict)


@dataclass(frozen=True)
class Problem:
    """One file the analysis cannot use: why, and what to do about it."""

    path: str
    reason: str
    remedy: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}; {self.remedy}"


def refusal_message(problems: Sequence[Problem], tables_dir: str | Path) -> str:
    n = len(problems)
    lines = [
        f"The analysis refused {n} input file{'s' if n != 1 else ''}; nothing was written to "
        f"{tables_dir} (tables already there are those of the last successful aggregate):",
        *(f"  {p}" for p in problems),
        "Do what each line says, then run snakemake again.",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


def load_json_object(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON object in ``path``; :class:`Unreadable` saying why when there is none."""
    return json_object(read_bytes(path))


def read_bytes(path: str | os.PathLike[str]) -> bytes:
    """The content of the file at ``path``; :class:`Unreadable` saying why when there is none."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise Unreadable("missing") from None
    except IsADirectoryError:
        raise Unreadable("a folder, not a file") from None
    except OSError as exc:
        raise Unreadable(f"cannot be read ({exc.strerror or exc})") from None


def json_object(raw: bytes) -> dict[str, Any]:
    """The JSON object ``raw`` holds; :class:`Unreadable` saying why when it holds none."""
    if not raw.strip():
        raise Unreadable("empty file" if not raw else "empty file (only white space)")
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise Unreadable(_json_problem(exc, len(raw))) from None
    except UnicodeDecodeError:
        raise Unreadable("not UTF-8 text") from None
    if not isinstance(data, dict):
        raise Unreadable(f"not a JSON object but a JSON {_json_type(data)}")
    return data


def _json_problem(exc: json.JSONDecodeError, size: int) -> str:
    """A truncated document (an interrupted copy, an editor saving half a file) ends inside
    the JSON; anything else is invalid where the parser says."""
    text = exc.doc.rstrip()
    if not text.endswith(("}", "]")) and exc.lineno > text.count("\n"):
        return f"not valid JSON: cut short (the file ends after {size} bytes, inside the JSON)"
    return f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"


def _json_type(value: Any) -> str:
    return {list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number"
    )


def readable_schema_versions() -> tuple[int, ...]:
    """The run record schema versions this mabench reads."""
    return READABLE_VERSIONS


def versions_read() -> str:
    """The readable schema versions in words: ``version 1``, ``versions 1 and 2``."""
    v = [str(x) for x in readable_schema_versions()]
    if len(v) == 1:
        return f"version {v[0]}"
    return f"versions {', '.join(v[:-1])} and {v[-1]}"


def load_run_record(path: str | os.PathLike[str]) -> RunRecord:
    """The run record in ``path``; :class:`Unreadable` saying why when it has none.

    A valid record is decoded and validated in one pass; only a file that is none is parsed
    again, to say why in the most useful terms (not JSON, not a run record, a schema version
    this mabench does not read, or the path in the JSON and what is wrong there)."""
    raw = read_bytes(path)
    try:
        return parse_record(raw)
    except RecordError as exc:
        raise Unreadable(_why_no_record(raw, exc)) from None


def _why_no_record(raw: bytes, invalid: RecordError) -> str:
    try:
        data = json_object(raw)
    except Unreadable as exc:
        return str(exc)
    kind = data.get("kind")
    if kind != RECORD_KIND:
        return f"not a run record (its kind is {kind!r}, not {RECORD_KIND!r})"
    version = data.get("schema_version")
    if type(version) is not int or version not in readable_schema_versions():
        return (
            f"schema version {version!r}, but this mabench reads {versions_read()} "
            "(written by another mabench version, or edited?)"
        )
    return str(invalid)


def record_facts(path: str, record: RunRecord) -> RecordFacts:
    key = RunKey(record.study, record.config_id, record.run_index)
    return RecordFacts(path, key, config_hash=record.environment.config_hash)


# ---------------------------------------------------------------------------------------------
# Where a run record belongs
# ---------------------------------------------------------------------------------------------


def key_of_path(path: str | os.PathLike[str]) -> RunKey | None:
    """The run a record at ``path`` must hold (``.../<study>/runs/<config>/run_<i>.json``),
    or ``None`` where the path is no run record's place."""
    parts = Path(path).parts
    if len(parts) < 4 or parts[-3] != RUNS_DIR:
        return None
    m = _RUN_FILE.fullmatch(parts[-1])
    return None if m is None else RunKey(parts[-4], parts[-2], int(m.group(1)))


def place_of(key: RunKey, beside: str | os.PathLike[str]) -> Path:
    """Where the record of ``key`` belongs, in the results folder of the record at ``beside``."""
    results = Path(beside).parents[3]
    return results / key.study / RUNS_DIR / key.config_id / f"run_{key.run_index}.json"


def check_records(facts: Sequence[RecordFacts], expected: Expected | None) -> list[Problem]:
    """Every problem of these run records, in their order.

    Without ``expected`` only what needs no study is checked: each record is readable and no
    two hold the same run.
    """
    problems: dict[str, Problem] = {}
    held_at: dict[RunKey, list[str]] = {}
    for f in facts:
        if f.holds is not None:
            held_at.setdefault(f.holds, []).append(f.path)
    for f in facts:
        problem = _record_problem(f, expected, held_at)
        if problem is not None:
            problems.setdefault(f.path, problem)
    for key, paths in held_at.items():
        clean = [p for p in paths if p not in problems]
        if len(clean) > 1:
            for path in clean:
                others = ", ".join(p for p in clean if p != path) or path
                problems[path] = Problem(
                    path,
                    f"holds {key}, and so does {others}",
                    "keep one: delete the others, or move each to where it belongs",
                )
    return [problems[f.path] for f in facts if f.path in problems]


def _record_problem(
    f: RecordFacts, expected: Expected | None, held_at: Mapping[RunKey, list[str]]
) -> Problem | None:
    place = key_of_path(f.path)
    if f.unreadable is not None:
        return Problem(
            f.path, f.unreadable, f"{_measure_again(place)}, or restore it from a backup"
        )
    if expected is None or f.holds is None:
        return None
    if place is None or place.study != expected.study:
        return Problem(
            f.path,
            f"not where a run record of study {expected.study!r} belongs "
            f"({expected.study}/{RUNS_DIR}/<config>/run_<i>.json)",
            "move it to where it belongs, or delete it",
        )
    if f.holds != place:
        return _misplaced(f, place, held_at)
    current = expected.config_hashes.get(place.config_id)
    if current is None:
        return Problem(
            f.path,
            f"study {expected.study!r} has no config {place.config_id!r}",
            "move it away, or delete it",
        )
    if f.config_hash != current:
        return Problem(
            f.path,
            f"stale: measured under other options than config {place.config_id} has now "
            f"(its config hash {str(f.config_hash)[:12]}…, the config's now {current[:12]}…; "
            "kept by --rerun-triggers mtime?)",
            "delete it to have it measured again under the current options, or restore the "
            "options it was measured with",
        )
    return None


def _misplaced(f: RecordFacts, place: RunKey, held_at: Mapping[RunKey, list[str]]) -> Problem:
    assert f.holds is not None
    home = place_of(f.holds, f.path)
    if home in {Path(p) for p in held_at[f.holds]}:
        return Problem(
            f.path,
            f"a second copy of {f.holds} (its own record is {home}), not {place}",
            f"{_measure_again(place)} (the original stays)",
        )
    return Problem(
        f.path,
        f"holds {f.holds}, not {place} (copied or moved here?)",
        f"move it back to {home}, or {_measure_again(place)}",
    )


def _measure_again(place: RunKey | None) -> str:
    if place is None:
        return "delete it"
    return f"delete it to have {place.config_id} run {place.run_index} measured again"


# ---------------------------------------------------------------------------------------------
# Forced-unload evidence and failure reports
# ---------------------------------------------------------------------------------------------


def check_unload_files(expected: Expected) -> list[Problem]:
    """Every problem of the study's forced-unload files, one per file, by config."""
    problems = []
    for config_id, path in expected.unload_files.items():
        reason = _unload_problem(path, expected.study, config_id)
        if reason is not None:
            problems.append(
                Problem(
                    str(path),
                    reason,
                    f"delete it to have the forced unload before {config_id} done again "
                    f"(Snakemake then measures the runs of {config_id} again, as they follow "
                    "it), or restore it from a backup",
                )
            )
    return problems


def _unload_problem(path: str | Path, study: str, config_id: str) -> str | None:
    try:
        data = load_json_object(path)
    except Unreadable as exc:
        return str(exc)
    if data.get("study") != study or data.get("config_id") != config_id:
        return (
            f"the forced unload of {data.get('config_id')!r} of study {data.get('study')!r}, "
            f"not of {config_id!r} of study {study!r}"
        )
    if data.get("verified") is not True:
        return f"does not say the unload was verified (verified: {data.get('verified')!r})"
    return None


def failure_report_problem(data: Mapping[str, Any], study: str | None) -> str | None:
    """Why a failure report (already parsed) cannot be counted, or ``None`` when it can."""
    kind = data.get("kind", FAILURE_KIND)
    if kind != FAILURE_KIND:
        return f"not a failure report (its kind is {kind!r})"
    for name, types in _FAILURE_FIELDS.items():
        value = data.get(name)
        if value is not None and (type(value) not in types):
            return f"{name} is {value!r}, not a {'string' if str in types else 'whole number'}"
    if study is not None and data.get("study") != study:
        return f"a failure of study {data.get('study')!r}, not of {study!r}"
    if data.get("at") is not None:
        try:
            datetime.fromisoformat(data["at"])
        except ValueError:
            return f"at is {data['at']!r}, not an ISO 8601 time"
    return None


def skipped_report(path: str | Path, reason: str) -> Problem:
    return Problem(
        str(path),
        f"skipped, {reason}",
        "it is left out of the failures table; delete it, or restore it from a backup",
    )
