"""Synthetic run records (mabench.datasets.synthetic): schema-valid, and record i always the
same, so that a smaller study is a prefix of a larger one."""

from __future__ import annotations

from pathlib import Path

from mabench.datasets.synthetic import ensure_records, make_record
from mabench.measure.records import read_record, validate_record


def test_synthetic_records_are_valid_and_deterministic(tmp_path: Path) -> None:
    data = make_record(5).to_json()
    validate_record(data)
    assert make_record(5).to_json() == data
    paths = ensure_records(30, tmp_path)
    assert read_record(paths[29]).config_id == "cfg029"
    assert read_record(paths[3]) == make_record(3)
