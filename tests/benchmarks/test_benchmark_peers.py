"""Smoke tests of the peers' clients (benchmarks/peers.py) on real ideal servers: each client
runs the harness's run shape and measures what the harness measures. No timing is asserted
beyond what the ideal server's exact timing implies, with wide margins for a busy machine.
"""

from __future__ import annotations

import pytest

from benchmarks import peers
from benchmarks.common import servers
from benchmarks.readme import PEERS_END, PEERS_START, render_peers
from mabench.measure.agents import build_plans
from mabench.measure.client import _call_body

TTFT_MS, TOKEN_MS, NUM_PREDICT = 60.0, 10.0, 4


@pytest.fixture(scope="module")
def two_agents():
    from benchmarks.harness_overhead import QUICK, make_study

    p = {**QUICK, "ttft_ms": TTFT_MS, "token_ms": TOKEN_MS, "num_predict": NUM_PREDICT}
    with servers("ideal", 2, TTFT_MS, TOKEN_MS) as fleet:
        urls = {f"s{i:02d}": u for i, u in enumerate(fleet.urls)}
        study = make_study(urls, "asyncio", p)
        yield build_plans(study, study.config("c1"), urls, "corpus")


@pytest.mark.parametrize("client", peers.CLIENTS)
def test_each_client_runs_solo_then_concurrent_phases(client: str, two_agents) -> None:
    row = peers.run_client(client, two_agents, TTFT_MS)
    calls = len(two_agents) * len(two_agents[0].calls)
    assert row["client"] == client and row["n"] == 2 and row["calls"] == calls
    # on perfectly parallel servers the concurrent phase lasts about one agent alone
    assert row["true_efficiency"] == pytest.approx(100.0, abs=15.0)
    assert row["efficiency_loss"] == pytest.approx(100.0 - row["true_efficiency"])
    # the first token leaves the server exactly TTFT after the request arrived: no client can
    # see it earlier, and none should take a second TTFT to read it
    for key in ("concurrent_ttft_error_ms_median", "solo_ttft_error_ms_median"):
        assert -1.0 < row[key] < TTFT_MS, (key, row[key])


def test_peers_send_the_requests_the_harness_sends(two_agents) -> None:
    plan = two_agents[0]
    req = peers.request_of(plan, 0, "")
    expected = _call_body(
        plan.endpoint, plan.info.model, req.prompt, plan.system, plan.options(0), -1, True
    )
    assert req.body() == expected
    generate = peers.Request("generate", "m", "p", "s", {"num_predict": 2})
    assert generate.body() == _call_body("generate", "m", "p", "s", {"num_predict": 2}, -1, True)


def test_the_clients_take_turns() -> None:
    orders = [peers.order_of_run(r) for r in range(1, 5)]
    assert all(sorted(o) == sorted(peers.CLIENTS) for o in orders)
    assert orders[1] == orders[0][::-1] and orders[2][0] != orders[0][0]


def test_ttft_accuracy_measures_the_peers_beside_ours() -> None:
    from benchmarks.ttft_accuracy import QUICK, measure_server

    p = {**QUICK, "ttft_ms": 40.0, "calls": 2, "phases": 1, "peers": True}
    entry = measure_server("ideal", p)
    for kind in ("async", "sync", "raw", *peers.PEERS):
        s = entry["client"][kind]
        assert s["n"] == p["calls"] and -1.0 < s["median"] < p["ttft_ms"], (kind, s)


def test_harness_overhead_puts_the_peers_beside_ours() -> None:
    from benchmarks.common import Result
    from benchmarks.harness_overhead import QUICK, _peer_goals, peer_summary, peer_sweep

    p = {**QUICK, "ttft_ms": 40.0, "token_ms": 5.0, "peer_num_predict": 2}
    rows = peer_sweep({**p, "peer_ns": [2], "peer_runs": {2: 1}})
    assert sorted(r["client"] for r in rows) == sorted(peers.CLIENTS)
    table = peer_summary(rows)
    assert [e["client"] for e in table] == list(peers.CLIENTS)
    res = Result("harness_overhead", "t")
    _peer_goals(res, table)
    (goal,) = res.goals
    best_peer = min(e["efficiency_loss"]["median"] for e in table if e["client"] in peers.PEERS)
    assert goal.target == best_peer and goal.name.startswith("true-efficiency loss, N=2")
    doc = {"benchmark": "harness_overhead", "details": {"peers": {"ideal_agent_s": 0.1}}}
    doc["details"]["peers"]["summary"] = table
    rendered = render_peers([doc]).splitlines()
    assert rendered[0] == PEERS_START and rendered[-1] == PEERS_END
    assert [line.split(" | ")[1] for line in rendered if line.startswith("| 2 |")] == list(
        peers.CLIENTS
    )
