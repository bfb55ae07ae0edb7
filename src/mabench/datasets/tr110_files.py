"""The files of a TR110 results folder, checked before anything of it is imported.

The layout the importer reads::

    <folder>/phase_<P>_test_<NNN>/summary.json          one per test (config)
    <folder>/phase_<P>_test_<NNN>/run_<i>/metrics.json  one per run

Every ``summary.json`` and ``metrics.json`` must be a JSON object holding what the importer
and the reanalysis read from it, with those types (:data:`SUMMARY_SCHEMA`,
:data:`METRICS_SCHEMA`), and each ``metrics.json`` must be the run its folder names
(``summary.run_number``). A folder that differs is refused with one :class:`LayoutError`
naming every offending file and what is wrong with it; nothing is imported. Other entries (the
dataset's README, logs, ``comprehensive_test_summary.json``) are not read.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jsonschema

from mabench.analysis.integrity import Unreadable, load_json_object

RUN_DIR = re.compile(r"run_(\d+)")

_NUMBER = {"type": "number"}
_MAYBE_NUMBER = {"type": ["number", "null"]}
_MAYBE_COUNT = {"type": ["integer", "null"], "minimum": 0}
_OPTIONS = {"type": ["object", "null"]}

#: the keys of a run's ``metrics.json`` ``summary`` the importer and the reanalysis read
_RUN_SUMMARY: dict[str, Any] = {
    "run_number": {"type": "integer", "minimum": 1},
    "collector_ollama_url": {"type": ["string", "null"]},
    "insight_ollama_url": {"type": ["string", "null"]},
    "baseline_duration": {"type": "number", "minimum": 0},
    "chimera_duration": {"type": "number", "minimum": 0},
    "concurrent_wall_time": {"type": "number", "exclusiveMinimum": 0},
    "baseline_throughput": _NUMBER,
    "chimera_throughput": _NUMBER,
    "throughput_delta": _NUMBER,
    "baseline_ttft_ms": _NUMBER,
    "chimera_ttft_ms": _NUMBER,
    "ttft_delta_ms": _NUMBER,
    "sequential_estimated_time": _NUMBER,
    "concurrency_speedup": _NUMBER,
    "resource_contention_detected": {"type": "boolean"},
}

_AGENT: dict[str, Any] = {
    "type": "object",
    "required": ["model", "aggregate_metrics"],
    "properties": {
        "model": {"type": "string", "minLength": 1},
        "configuration": _OPTIONS,
        "aggregate_metrics": {
            "type": "object",
            "properties": {
                "total_requests": _MAYBE_COUNT,
                "total_tokens_generated": _MAYBE_COUNT,
                "average_tokens_per_second": _MAYBE_NUMBER,
                "average_ttft_ms": _MAYBE_NUMBER,
            },
        },
    },
}

#: ``run_<i>/metrics.json``: the run's summary and each agent's model, options and totals
METRICS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["summary", "collector", "insight"],
    "properties": {
        "summary": {
            "type": "object",
            "required": [k for k in _RUN_SUMMARY if not k.endswith("_url")],
            "properties": _RUN_SUMMARY,
        },
        "collector": _AGENT,
        "insight": _AGENT,
    },
}

#: ``summary.json``: the test's scenario and options, its runs and TR110's own averages
SUMMARY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["scenario", "runs", "aggregate"],
    "properties": {
        "scenario": {"type": "string", "minLength": 1},
        "chimera_overrides": _OPTIONS,
        "chimera_overrides_agent2": _OPTIONS,
        "runs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["run_number"],
                "properties": {"run_number": {"type": "integer"}},
            },
        },
        "aggregate": {
            "type": "object",
            "required": [
                "average_concurrency_speedup",
                "average_efficiency",
                "contention_detected_runs",
                "average_throughput_delta",
                "average_ttft_delta_ms",
            ],
            "properties": {
                "average_concurrency_speedup": _NUMBER,
                "average_efficiency": _NUMBER,
                "contention_detected_runs": {"type": "integer", "minimum": 0},
                "average_throughput_delta": _NUMBER,
                "average_ttft_delta_ms": _NUMBER,
            },
        },
    },
}


class LayoutError(ValueError):
    """A folder that is not a TR110 results folder as the importer reads it; the message
    names every offending file or folder and what is wrong with it."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__(
            "\n".join(
                [
                    "Not a TR110 results folder as the importer reads it; nothing was imported:",
                    *(f"  {p}" for p in self.problems),
                    "Fix or remove what each line names, or import another folder.",
                ]
            )
        )


def run_dirs(test_dir: Path) -> list[tuple[int, Path]]:
    """The ``run_<i>`` folders of a test folder, by run index."""
    found = []
    for path in test_dir.iterdir():
        m = RUN_DIR.fullmatch(path.name)
        if m and path.is_dir():
            found.append((int(m.group(1)), path))
    return sorted(found)


def check_tests(test_paths: Sequence[Path]) -> None:
    """Raise :class:`LayoutError` naming every file of these test folders that is not what
    the importer expects."""
    problems: list[str] = []
    for test in test_paths:
        problems += _file_problems(test / "summary.json", SUMMARY_SCHEMA)
        runs = run_dirs(test)
        if not runs:
            problems.append(f"{test}: no run_<i>/ folders (each run's metrics.json is in one)")
        seen: dict[int, Path] = {}
        for index, run in runs:
            if index in seen:
                problems.append(f"{run}: run {index} again ({seen[index]} is run {index} too)")
                continue
            seen[index] = run
            problems += _file_problems(run / "metrics.json", METRICS_SCHEMA, run_number=index)
    if problems:
        raise LayoutError(problems)


def _file_problems(path: Path, schema: dict[str, Any], run_number: int | None = None) -> list[str]:
    try:
        data = load_json_object(path)
    except Unreadable as exc:
        return [f"{path}: {exc}"]
    errors = sorted(
        jsonschema.Draft202012Validator(schema).iter_errors(data),
        key=lambda e: [str(p) for p in e.absolute_path],
    )
    if errors:
        where = "/".join(str(p) for p in errors[0].absolute_path) or "(top level)"
        return [f"{path}: {where}: {errors[0].message}"]
    if run_number is not None and data["summary"]["run_number"] != run_number:
        return [
            f"{path}: holds run {data['summary']['run_number']} (summary/run_number), "
            f"but its folder is run {run_number}: copied from another run?"
        ]
    return []
