"""The run protocol against simulated servers whose timing is known exactly.

Analytic expectations (c = one call's duration = ttft + (num_predict - 1) * token, two calls
per agent, so one agent alone takes A = 2c):

- two agents on two parallel servers: solo sum 2A, concurrent wall A, so true efficiency
  = 100 %. The harness adds a few ms per call on both sides and a little coordination time in
  the concurrent phase only; with A ~ 1 s that costs < 1 %, hence the bound >= 99 %.
- two agents on one serialized (FIFO) server: the four calls run one after another, so the
  concurrent wall is 4c = the solo sum: true efficiency 50 %. The agents' spans are 3c
  (first agent: its calls are 1st and 3rd) and 4c (2nd and 4th), so the original formula
  gives seed speedup 7c / 4c = 1.75, seed efficiency 87.5 %. Tolerance +-2 pp for the
  per-call HTTP overhead.
"""

from __future__ import annotations

import pytest

from mabench.config import study_from_dict
from mabench.measure.errors import RunFailed
from mabench.measure.protocol import execute_run
from mabench.measure.records import validate_record


def _study(
    urls: dict[str, str],
    agents: list[tuple[str, str]],
    coordinator="asyncio",
    num_predict=40,
    options=None,
    **extra,
):
    return study_from_dict(
        {
            "study": "protocol-test",
            "runs": 2,
            "coordinator": coordinator,
            "backend": {"kind": "external"},
            "servers": [{"name": n, "url": u} for n, u in urls.items()],
            "workloads": {
                "w": {
                    "calls": [
                        {"prompt": "collector_analyse.md.j2", "num_predict": num_predict},
                        {"prompt": "collector_report.md.j2", "num_predict": num_predict},
                    ]
                }
            },
            "agents": [{"name": a, "workload": "w", "server": s} for a, s in agents],
            "configs": [{"id": "c1", "scenario": "chimera_homo", "options": options or {}}],
            # each simulated server is a process of its own whose timing does not depend on
            # the other's: the solo phase is the sequential baseline
            "baseline": "solo",
            **extra,
        }
    )


@pytest.mark.parametrize("coordinator", ["asyncio", "threads"])
def test_two_parallel_servers_reach_full_true_efficiency(sim_server, coordinator):
    # c = 150 + 39 * 15 = 735 ms, A = 1.47 s. Two sim-server processes and the harness share
    # the machine's cores, so a token now and then arrives a scheduler tick late (a clean
    # clone on 2 cores measured 98.6 % once). The bounds check what the metric means (~100 %
    # here, ~50 % on one serialized server below), not the harness's precision: that is
    # benchmarks/harness_overhead's job (>= 99.8 % on ideal servers).
    a, b = sim_server(ttft_ms=150, token_ms=15), sim_server(ttft_ms=150, token_ms=15)
    study = _study({"a": a.url, "b": b.url}, [("collector", "a"), ("insight", "b")], coordinator)
    for run in (1, 2):  # both phase orders
        record = execute_run(study, "c1", run, {"a": a.url, "b": b.url})
        validate_record(record.to_json())
        m = record.metrics
        assert record.protocol.phase_order == (
            ["solo", "concurrent"] if run == 1 else ["concurrent", "solo"]
        )
        assert m.true_efficiency == pytest.approx(100.0, abs=4.0), m
        assert m.seed_efficiency >= 96.0
        assert m.coordination_overhead_ms < 20
        for agent in m.agents:
            assert agent.slowdown == pytest.approx(1.0, abs=0.04)
            assert agent.solo_tps == pytest.approx(
                1000 / 15, rel=0.01
            )  # 40 tokens / 0.6 s server clock
        assert record.isolation.verified
        assert [c.server_metrics.eval_count for c in record.calls] == [40] * 8
        # the warm-up opened each agent's connection; no measured call opened another
        assert [c.reconnects for c in record.calls] == [0] * 8


@pytest.mark.parametrize("coordinator", ["asyncio", "threads"])
def test_one_serialized_server_halves_true_efficiency(sim_server, coordinator):
    s = sim_server(ttft_ms=100, token_ms=10, mode="serialized")
    study = _study({"s": s.url}, [("collector", "s"), ("insight", "s")], coordinator)
    record = execute_run(study, "c1", 1, {"s": s.url})
    m = record.metrics
    assert record.topology.kind == "shared"
    assert m.true_efficiency == pytest.approx(50.0, abs=2.0)
    assert m.seed_efficiency == pytest.approx(87.5, abs=2.0)
    assert m.seed_speedup == pytest.approx(1.75, abs=0.04)
    slowdowns = sorted(a.slowdown for a in m.agents)
    assert slowdowns == pytest.approx([1.5, 2.0], abs=0.05)  # 3c / 2c and 4c / 2c


@pytest.mark.parametrize("coordinator", ["asyncio", "threads"])
@pytest.mark.parametrize("n", [1, 2, 4, 8])
def test_n_agents_on_n_servers(sim_server, coordinator, n):
    # n server processes and the harness share this machine's cores, so a token now and then
    # arrives a scheduler tick late (+-10 ms on a 0.6 s agent): the bound widens with n.
    # Precision is checked above with longer calls; the benchmarks measure the overhead.
    servers = {f"s{i}": sim_server(ttft_ms=100, token_ms=10).url for i in range(n)}
    study = _study(servers, [(f"agent{i}", f"s{i}") for i in range(n)], coordinator, num_predict=20)
    record = execute_run(study, "c1", 1, servers)
    m = record.metrics
    assert m.n_agents == n
    assert len(record.calls) == 2 * 2 * n
    assert len(record.agent_spans) == 2 * n
    assert m.true_efficiency == pytest.approx(100.0, abs=4.0 if n <= 4 else 8.0)
    assert m.contention_legacy is False


def test_both_agents_on_one_parallel_server(sim_server):
    s = sim_server(ttft_ms=100, token_ms=10, mode="parallel")
    study = _study({"s": s.url}, [("collector", "s"), ("insight", "s")])
    m = execute_run(study, "c1", 1, {"s": s.url}).metrics
    assert m.true_efficiency == pytest.approx(100.0, abs=2.0)


@pytest.mark.parametrize("coordinator", ["asyncio", "threads"])
def test_a_phase_starts_before_any_of_its_agents_sends(sim_server, coordinator):
    # Four agents on four servers, both phase orders: each phase's start is read before any
    # agent of the phase may send (the threads coordinator reads it inside the barrier), so
    # no agent span or request precedes its phase, and every answer is inside it.
    servers = {f"s{i}": sim_server(ttft_ms=20, token_ms=5).url for i in range(4)}
    study = _study(servers, [(f"agent{i}", f"s{i}") for i in range(4)], coordinator, num_predict=4)
    for run in (1, 2):
        record = execute_run(study, "c1", run, servers)
        for phase in record.phases:
            spans = [s for s in record.agent_spans if s.phase == phase.phase]
            calls = [c for c in record.calls if c.phase == phase.phase]
            assert len(spans) == 4 and len(calls) == 8
            assert phase.t_start_ns <= min(s.t_start_ns for s in spans)
            assert phase.t_start_ns <= min(c.t_sent_ns for c in calls)
            assert max(s.t_end_ns for s in spans) <= phase.t_end_ns
        m = record.metrics
        assert m.coordination_overhead_ms >= 0
        assert m.seed_efficiency <= 100.0


def _switches(record, phase: str, loaded: str) -> int:
    """Calls of ``phase`` that the server served right after another agent's call: the reloads
    its FIFO order implies (calls served one at a time, in first-token order), starting with
    the agent whose model the server held when the phase began (``loaded``: before every
    phase the cache policy of an Ollama-API server, reload, loads the agents' models again in
    roster order, so the last agent's is loaded)."""
    served = sorted((c for c in record.calls if c.phase == phase), key=lambda c: c.t_first_token_ns)
    agents = [loaded, *(c.agent for c in served)]
    return sum(prev != c.agent for prev, c in zip(agents, served, strict=False))


@pytest.mark.parametrize("coordinator", ["asyncio", "threads"])
def test_a_shared_server_with_two_runner_configs_reloads_at_every_switch(sim_server, coordinator):
    # Different runner options (num_ctx) on one FIFO server reload the model at every switch.
    # The warm-up leaves the insight's model loaded, so the solo phase reloads twice (each
    # agent's first call). In the concurrent phase the calls alternate: asyncio sends the
    # collector's first, so four reloads. The threads coordinator releases both agents at once
    # and the server may serve the insight first (then three, and the next phase starts from
    # the collector's model): there the counts must match the order the server served the
    # calls in. With c = 100 + 39 * 10 = 490 ms per call, L = 300 ms per load, j solo and k
    # concurrent reloads: solo sum 4c + jL, concurrent wall 4c + kL, true efficiency
    # (4c + jL) / (4c + kL) / 2 (40.5 % for 2 and 4), and without the loads 4c / 4c / 2 = 50 %.
    s = sim_server(ttft_ms=100, token_ms=10, load_ms=300, mode="serialized")
    study = _study(
        {"s": s.url},
        [("collector", "s"), ("insight", "s")],
        coordinator,
        options={"insight": {"num_ctx": 1024}},
    )
    c, load = 0.49, 0.3
    for run in (1, 2):  # both phase orders
        record = execute_run(study, "c1", run, {"s": s.url})
        validate_record(record.to_json())
        m = record.metrics
        j, k = m.solo_reloads, m.concurrent_reloads
        assert j == _switches(record, "solo", "insight")
        assert k == _switches(record, "concurrent", "insight")
        if coordinator == "asyncio":
            assert (j, k) == (2, 4)
            per_agent = {a.agent: (a.solo_reloads, a.concurrent_reloads) for a in m.agents}
            assert per_agent == {"collector": (1, 2), "insight": (1, 2)}
        assert sum(a.concurrent_reloads for a in m.agents) == k
        assert m.solo_reload_s == pytest.approx(j * load, abs=0.05)
        assert m.concurrent_reload_s == pytest.approx(k * load, abs=0.1)
        expected = 100 * (4 * c + j * load) / (4 * c + k * load) / 2
        assert m.true_efficiency == pytest.approx(expected, abs=2.0)
        assert m.true_efficiency_excl_load == pytest.approx(50.0, abs=2.0)


def test_agents_that_share_runner_options_never_reload(sim_server):
    s = sim_server(ttft_ms=50, token_ms=5, load_ms=300, mode="serialized")
    study = _study({"s": s.url}, [("collector", "s"), ("insight", "s")], num_predict=8)
    m = execute_run(study, "c1", 1, {"s": s.url}).metrics
    assert (m.solo_reloads, m.concurrent_reloads) == (0, 0)
    assert (m.solo_reload_s, m.concurrent_reload_s) == (0.0, 0.0)
    assert m.true_efficiency_excl_load == m.true_efficiency


def test_both_phases_did_the_same_work(sim_server):
    a, b = sim_server(ttft_ms=20, token_ms=2), sim_server(ttft_ms=20, token_ms=2)
    study = _study({"a": a.url, "b": b.url}, [("collector", "a"), ("insight", "b")], num_predict=8)
    validity = execute_run(study, "c1", 1, {"a": a.url, "b": b.url}).validity
    assert validity.work.matched and validity.flags == []
    assert [(c.agent, c.call_index, c.matched) for c in validity.work.calls] == [
        ("collector", 0, True),
        ("collector", 1, True),
        ("insight", 0, True),
        ("insight", 1, True),
    ]
    assert validity.work.first_divergence == {}


def test_fewer_tokens_under_concurrency_is_flagged_or_fails_the_run(sim_server):
    # The server generates half the tokens of a call that overlaps another one: in the
    # concurrent phase both agents' calls overlap, so both differ from their first call on.
    s = sim_server(ttft_ms=20, token_ms=5, busy_tokens_pct=50)
    agents = [("collector", "s"), ("insight", "s")]
    lenient = _study({"s": s.url}, agents, num_predict=8, on_work_mismatch="flag")
    record = execute_run(lenient, "c1", 1, {"s": s.url})
    validate_record(record.to_json())
    work = record.validity.work
    assert record.validity.flags == ["work_mismatch"]
    assert not work.matched and work.first_divergence == {"collector": 0, "insight": 0}
    first = work.calls[0]
    assert (first.solo_eval_count, first.concurrent_eval_count) == (8, 4)
    assert (first.solo_done_reason, first.concurrent_done_reason) == ("length", "stop")
    assert first.solo_text_sha256 != first.concurrent_text_sha256
    # on a server that is not ours (external), a mismatch fails the run unless the study says
    # otherwise: on_work_mismatch's default, auto, is fail there
    strict = _study({"s": s.url}, agents, num_predict=8)
    assert strict.work_mismatch_policy == "fail"
    with pytest.raises(RunFailed, match=r"different work: collector from call 0 \(eval_count 8"):
        execute_run(strict, "c1", 1, {"s": s.url})


def test_the_servers_hold_only_what_the_agents_loaded_after_the_phases(sim_server):
    # Both agents share one server with two runner configs: after the phases it holds the
    # model with one of the contexts the agents' loads left (checked against /api/ps after
    # each load); the idle second server holds nothing.
    s, idle = sim_server(ttft_ms=10, token_ms=2), sim_server()
    urls = {"s": s.url, "idle": idle.url}
    agents = [("collector", "s"), ("insight", "s")]
    study = _study(urls, agents, num_predict=4, options={"insight": {"num_ctx": 1024}})
    validity = execute_run(study, "c1", 1, urls).validity
    after = validity.isolation_after
    assert after.verified and validity.flags == []
    assert {(m.name, m.context_length) for m in after.expected["s"]} == {
        ("smollm2:135m", 4096),
        ("smollm2:135m", 1024),
    }
    assert after.expected["idle"] == [] and after.loaded["idle"] == []
    # after the phases, and before each phase's cache reload, it held only what a load left
    assert {m.name for m in after.loaded["s"]} == {"smollm2:135m"}
    assert all(m in after.expected["s"] for m in after.loaded["s"])


def test_a_model_another_client_loaded_during_the_phases_flags_the_run(sim_server):
    # The server loads "intruder:latest" as another client would, at the 4th generation:
    # the 2 warm-up calls, then the solo phase's 2nd. The reload that resets the server's
    # cache before the next phase unloads it, but not unseen: what the server listed before
    # each reset counts too.
    s = sim_server(ttft_ms=10, token_ms=2, intruder_after=4)
    study = _study({"s": s.url}, [("collector", "s"), ("insight", "s")], num_predict=4)
    record = execute_run(study, "c1", 1, {"s": s.url})
    validate_record(record.to_json())
    after = record.validity.isolation_after
    assert record.validity.flags == ["isolation_after"]
    assert not after.verified
    assert [(m.name, m.context_length) for m in after.unexpected["s"]] == [
        ("intruder:latest", 4096)
    ]
    assert record.validity.work.matched  # the work itself was the same


def test_the_record_keeps_each_servers_declared_settings(sim_server):
    s = sim_server(ttft_ms=10, token_ms=2)
    study = study_from_dict(
        {
            "study": "settings-test",
            "backend": {"kind": "external"},
            "servers": [{"name": "s", "url": s.url, "settings": {"OLLAMA_NUM_PARALLEL": 1}}],
            "agents": [{"name": "x", "workload": "collector", "server": "s"}],
            "workloads": {
                "collector": {"calls": [{"prompt": "collector_analyse.md.j2", "num_predict": 2}]}
            },
            "configs": [{"id": "c1", "scenario": "chimera_homo"}],
        }
    )
    (server,) = execute_run(study, "c1", 1, {"s": s.url}, threads={"s": None}).topology.servers
    assert server.settings == {"OLLAMA_NUM_PARALLEL": "1"}
    assert server.settings_source == "declared"
    assert server.threads is None


@pytest.mark.parametrize("coordinator", ["asyncio", "threads"])
def test_no_garbage_collection_runs_inside_a_measured_phase(sim_server, coordinator, monkeypatch):
    # With a collection forced after every allocation, collections happen throughout the run
    # (loads, warm-up, checks) but none between a measured phase's start and its end.
    import gc
    import time

    from mabench.measure import protocol

    clocks: list[protocol.Clock] = []

    class Recorded(protocol.Clock):
        def __init__(self) -> None:
            super().__init__()
            clocks.append(self)

    monkeypatch.setattr(protocol, "Clock", Recorded)
    servers = {f"s{i}": sim_server(ttft_ms=20, token_ms=5).url for i in range(2)}
    study = _study(servers, [("a0", "s0"), ("a1", "s1")], coordinator, num_predict=4)
    collections: list[int] = []

    def seen(phase: str, info: dict) -> None:
        if phase == "start":
            collections.append(time.perf_counter_ns())

    threshold = gc.get_threshold()
    gc.callbacks.append(seen)
    gc.set_threshold(1)
    try:
        record = execute_run(study, "c1", 1, servers)
    finally:
        gc.set_threshold(*threshold)
        gc.callbacks.remove(seen)
    assert gc.isenabled()
    origin = clocks[0].origin  # the run's clock: every record time is relative to it
    assert collections, "the forced collections never ran: the test measures nothing"
    measured = [p for p in record.phases if p.phase in ("solo", "concurrent")]
    assert len(measured) == 2
    for phase in measured:
        inside = [t for t in collections if phase.t_start_ns <= t - origin <= phase.t_end_ns]
        assert inside == [], f"{len(inside)} collections inside the {phase.phase} phase"
