"""``many_agents --quick``: concurrent phases of many agents on ideal servers, through both
coordinators, and the floor (a client that only moves bytes) beside each."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest


def _phases(p: dict[str, Any]) -> list[tuple[int, str]]:
    """(N, coordinator) of each concurrent phase the parameters ``p`` ask for, sorted."""
    coordinators = ("asyncio", "threads")
    return sorted((n, c) for n in p["many_ns"] for c in coordinators for _ in range(p["phases"]))


@pytest.fixture(scope="module")
def result(quick: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
    return quick("many_agents")


def test_many_agents_measures_concurrent_phases(result: dict[str, Any]) -> None:
    p = result["details"]["parameters"]
    harness = [r for r in result["details"]["runs"] if r["client"] == "harness"]
    assert sorted((r["n"], r["coordinator"]) for r in harness) == _phases(p)
    for row in harness:
        # the ideal servers' timing is exact: no phase is shorter than one agent alone
        assert row["wall_minus_ideal_ms"] >= 0 and row["efficiency_lower_bound"] <= 100.0, row
        assert row["ttft_error_ms"]["n"] == row["n"] * p["calls"]


def test_the_floor_runs_beside_each_coordinator(result: dict[str, Any]) -> None:
    p = result["details"]["parameters"]
    floor = [r for r in result["details"]["runs"] if r["client"] == "floor"]
    assert sorted((r["n"], r["coordinator"]) for r in floor) == _phases(p)
    assert all(0 < r["efficiency_lower_bound"] <= 100.0 for r in floor), floor
    for entry in result["details"]["summary"]:
        assert entry["floor_efficiency_lower_bound"]["n"] == p["phases"], entry
