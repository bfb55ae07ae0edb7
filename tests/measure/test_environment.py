"""The CPUs a run really had: the affinity mask, capped by a cgroup v2 CPU quota."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mabench.measure.environment import available_cpus, capture, cgroup_cpu_limit

AFFINITY = len(os.sched_getaffinity(0))


@pytest.mark.parametrize(
    ("cpu_max", "limit"),
    [("max 100000\n", None), ("150000 100000\n", 1.5), ("400000 100000\n", 4.0), ("", None)],
)
def test_the_cgroup_quota_is_quota_over_period(tmp_path: Path, cpu_max: str, limit) -> None:
    path = tmp_path / "cpu.max"
    path.write_text(cpu_max)
    assert cgroup_cpu_limit(path) == limit


def test_available_cpus_are_the_affinity_capped_by_the_quota(tmp_path: Path) -> None:
    path = tmp_path / "cpu.max"
    assert available_cpus(tmp_path / "absent") == AFFINITY  # no cgroup v2 limit here
    path.write_text("max 100000\n")
    assert available_cpus(path) == AFFINITY
    path.write_text("150000 100000\n")  # 1.5 CPUs: 1 thread runs unthrottled
    assert available_cpus(path) == 1
    path.write_text("50000 100000\n")  # half a CPU: still one
    assert available_cpus(path) == 1
    path.write_text(f"{100000 * (AFFINITY + 8)} 100000\n")  # a quota above the mask: the mask
    assert available_cpus(path) == AFFINITY


def test_available_cpus_follow_the_affinity_mask() -> None:
    before = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(before)})
        assert available_cpus() == 1
    finally:
        os.sched_setaffinity(0, before)


def test_the_record_says_how_many_cpus_the_run_had() -> None:
    env = capture("hash")
    assert env.cpus_available == available_cpus()
    assert 1 <= env.cpus_available <= env.cpu_count
