"""The progress line after each run: runs done, efficiencies, and the time left."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec

from mabench.config import study_from_dict
from mabench.datasets.synthetic import make_record
from mabench.servers.ownership import OWNER_ENV
from mabench.steps.progress import Progress, line, report_run

T0 = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)
STUDY = study_from_dict(
    {
        "study": "p",
        "runs": 3,
        "configs": [
            {"id": "c1", "scenario": "chimera_homo"},
            {"id": "c2", "scenario": "chimera_homo"},
        ],
    }
)


def _record(config_id: str, run_index: int, start_s: float, end_s: float):
    return msgspec.structs.replace(
        make_record(1),
        config_id=config_id,
        run_index=run_index,
        started_at=(T0 + timedelta(seconds=start_s)).isoformat(),
        finished_at=(T0 + timedelta(seconds=end_s)).isoformat(),
    )


def _measured(root: Path, record) -> str:
    path = root / "runs" / record.config_id / f"run_{record.run_index}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{}")
    return report_run(STUDY, record, root)


def test_time_left_is_the_runs_left_at_this_invocations_pace(tmp_path, monkeypatch):
    monkeypatch.setenv(OWNER_ENV, "111")
    first = _measured(tmp_path, _record("c1", 1, 0, 8))
    assert first.startswith("[1/6] c1 run 1: true efficiency ")
    assert first.endswith("; about 40 s left (5 runs at ~8 s)")
    # an earlier invocation's runs count as done, not in the pace
    monkeypatch.setenv(OWNER_ENV, "222")
    later = _measured(tmp_path, _record("c1", 2, 100, 130))  # 30 s incl. server start-up
    assert "[2/6]" in later and later.endswith("about 2 min left (4 runs at ~30 s)")
    last = _measured(tmp_path, _record("c1", 3, 131, 150))  # pace: 50 s / 2 runs
    assert last.endswith("about 75 s left (3 runs at ~25 s)")
    lines = (tmp_path / "logs" / "progress.jsonl").read_text().splitlines()
    assert len(lines) == 3


def test_the_last_run_and_a_run_without_a_solo_phase():
    record = msgspec.structs.replace(
        _record("c2", 3, 0, 1),
        metrics=msgspec.structs.replace(make_record(1).metrics, true_efficiency=None),
    )
    done = line(record, Progress(done=6, total=6, measured_now=6, per_run_s=1.0))
    assert "true efficiency n/a" in done and done.endswith("; all runs measured")
    slow = line(record, Progress(done=1, total=100, measured_now=1, per_run_s=120.0))
    assert slow.endswith("about 3.3 h left (99 runs at ~2 min)")
