"""``harness_overhead --quick``: runs of the product's code path on ideal servers, through both
coordinators and both APIs, and the peers' clients beside ours in the same run.

The ideal servers' timing is exact, so a run's concurrent phase lasts about one agent alone:
true efficiency near 100 % (wide bounds, on medians over runs: the machine may be busy), never
a wall under the analytic ideal.
"""

from __future__ import annotations

from collections.abc import Callable
from statistics import median
from typing import Any

import pytest

#: the clients of the peers' comparison, in the order its table lists them (benchmarks/README)
CLIENTS = ["ours-asyncio", "ours-threads", "aiohttp", "httpx-async", "httpx-sync", "ollama"]
PEERS = CLIENTS[2:]


@pytest.fixture(scope="module")
def result(quick: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
    return quick("harness_overhead")


def test_ideal_servers_give_full_true_efficiency_through_both_coordinators_and_apis(
    result: dict[str, Any],
) -> None:
    rows = result["details"]["runs"] + result["details"]["openai"]["runs"]
    shapes = {(r["api"], r["coordinator"]) for r in rows}
    assert shapes == {(a, c) for a in ("ollama", "openai") for c in ("asyncio", "threads")}
    for row in rows:
        # the ideal servers' timing is exact: no concurrent phase beats one agent alone
        assert row["wall_minus_ideal_ms"] > 0, row
    for api, coordinator in sorted(shapes):
        runs = [r for r in rows if (r["api"], r["coordinator"]) == (api, coordinator)]
        efficiency = median(r["true_efficiency"] for r in runs)
        assert efficiency == pytest.approx(100.0, abs=10.0), (api, coordinator, runs)
    assert {r["servers"] for r in result["details"]["sim_runs"]} == {"sim"}


def test_the_summary_is_each_group_s_spread(result: dict[str, Any]) -> None:
    runs = result["details"]["runs"]
    for entry in result["details"]["summary"]:
        group = [
            r["true_efficiency"]
            for r in runs
            if (r["n"], r["coordinator"]) == (entry["n"], entry["coordinator"])
        ]
        spread = entry["true_efficiency"]
        assert spread["n"] == len(group) > 0
        assert spread["min"] == round(min(group), 4) and spread["max"] == round(max(group), 4)
        assert spread["min"] <= spread["median"] <= spread["max"]


def test_each_client_runs_solo_then_concurrent_phases(result: dict[str, Any]) -> None:
    p = result["details"]["parameters"]
    rows = result["details"]["peers"]["runs"]
    assert sorted({r["client"] for r in rows}) == sorted(CLIENTS)
    for row in rows:
        assert row["n"] == 2 and row["calls"] == 2 * p["calls"], row
        assert row["efficiency_loss"] == pytest.approx(100.0 - row["true_efficiency"])
        # the first token leaves the server exactly TTFT after the request arrived: no client
        # can see it earlier
        for key in ("concurrent_ttft_error_ms_median", "solo_ttft_error_ms_median"):
            assert row[key] > -1.0, (row["client"], key, row[key])
    for client in CLIENTS:
        runs = [r for r in rows if r["client"] == client]
        # over its runs (one run may be slowed by a busy machine): on perfectly parallel
        # servers the concurrent phase lasts about one agent alone, and no client takes a
        # second TTFT to read the first token
        efficiency = median(r["true_efficiency"] for r in runs)
        assert efficiency == pytest.approx(100.0, abs=15.0), (client, runs)
        ttft_error = median(r["concurrent_ttft_error_ms_median"] for r in runs)
        assert ttft_error < p["ttft_ms"], (client, runs)


def test_the_clients_take_turns(result: dict[str, Any]) -> None:
    rows = result["details"]["peers"]["runs"]
    orders = [[r["client"] for r in rows if r["run_index"] == i] for i in (1, 2, 3)]
    assert all(sorted(order) == sorted(CLIENTS) for order in orders), orders
    assert orders[1] == orders[0][::-1] and orders[2][0] != orders[0][0], orders


def test_the_peer_goal_sets_ours_against_the_best_peer(result: dict[str, Any]) -> None:
    table = result["details"]["peers"]["summary"]
    assert [e["client"] for e in table] == CLIENTS
    loss = {e["client"]: e["efficiency_loss"]["median"] for e in table}
    (goal,) = [g for g in result["goals"] if g["name"].startswith("true-efficiency loss, N=2")]
    assert goal["target"] == min(loss[c] for c in PEERS)
    assert goal["measured"] == min(loss[c] for c in CLIENTS if c not in PEERS)
