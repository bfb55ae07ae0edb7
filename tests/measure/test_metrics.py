"""Run metrics against values computed by hand."""

from __future__ import annotations

import pytest
from msgspec.structs import replace

from mabench.measure.metrics import client_decode_tps, compute_run_metrics
from mabench.measure.records import AgentInfo, CallRecord, ServerMetrics, Span

S = 1_000_000_000  # ns per second
MS = 1_000_000


def agent(name: str, server: str = "a") -> AgentInfo:
    return AgentInfo(name=name, workload=name, server=server, model="m", options={})


def call(
    phase: str, name: str, t_sent: int, ttft: int, tokens: int, decode_s: float, eval_s: float
) -> CallRecord:
    first = t_sent + ttft
    last = first + int(decode_s * S)
    return CallRecord(
        phase=phase,
        agent=name,
        call_index=0,
        server="a",
        url="http://x",
        model="m",
        endpoint="chat",
        options={},
        prompt_chars=10,
        t_sent_ns=t_sent,
        t_first_token_ns=first,
        t_last_token_ns=last,
        t_done_ns=last + MS,
        chunks=tokens + 1,
        server_metrics=ServerMetrics(
            total_duration_ns=last - t_sent,
            load_duration_ns=0,
            prompt_eval_count=5,
            prompt_eval_duration_ns=ttft // 2,
            eval_count=tokens,
            eval_duration_ns=int(eval_s * S),
        ),
        done_reason="stop",
        response_text="x",
        token_arrivals_us=chunks(ttft, last - first, tokens),
    )


def chunks(ttft_ns: int, span_ns: int, n: int) -> list[int]:
    """Delta-encoded arrivals (µs) of ``n`` text chunks: the first at the TTFT, the others
    spread evenly over ``span_ns``."""
    if n == 0:
        return []
    step = span_ns // 1000 // (n - 1) if n > 1 else 0
    return [ttft_ns // 1000] + [step] * (n - 1)


def test_two_agents_hand_computed():
    agents = [agent("collector"), agent("insight", "b")]
    # solo: collector 10 s, insight 6 s; concurrent phase 12 s: collector 12 s, insight 8 s.
    phases = [Span("solo", None, 0, 16 * S), Span("concurrent", None, 20 * S, 32 * S)]
    spans = [
        Span("solo", "collector", 0, 10 * S),
        Span("solo", "insight", 10 * S, 16 * S),
        Span("concurrent", "collector", 20 * S, 32 * S),
        Span("concurrent", "insight", 20 * S, 28 * S),
    ]
    calls = [
        call("solo", "collector", 0, 500 * MS, 101, 2.0, 2.0),  # 50.5 tok/s server, 50 client
        call("solo", "insight", 10 * S, 400 * MS, 81, 2.0, 2.0),  # 40.5 server
        call("concurrent", "collector", 20 * S, 4500 * MS, 101, 4.0, 4.0),  # 25.25 server
        call("concurrent", "insight", 20 * S, 600 * MS, 81, 2.0, 2.0),
    ]
    m = compute_run_metrics(agents, calls, phases, spans)
    assert m.n_agents == 2
    assert m.concurrent_wall_s == pytest.approx(12.0)
    assert m.concurrent_sum_s == pytest.approx(20.0)
    assert m.solo_sum_s == pytest.approx(16.0)
    assert m.seed_speedup == pytest.approx(20 / 12)
    assert m.seed_efficiency == pytest.approx(100 * 20 / 12 / 2)
    assert m.true_speedup == pytest.approx(16 / 12)
    assert m.true_efficiency == pytest.approx(100 * 16 / 12 / 2)
    assert m.coordination_overhead_ms == pytest.approx(0.0)
    c, i = m.agents
    assert c.slowdown == pytest.approx(1.2)
    assert i.slowdown == pytest.approx(8 / 6)
    assert c.solo_tps == pytest.approx(50.5)
    assert c.concurrent_tps == pytest.approx(25.25)
    assert c.solo_client_tps == pytest.approx(50.0)  # (101 - 1) tokens over 2 s
    assert c.solo_ttft_ms == pytest.approx(500)
    assert c.concurrent_ttft_ms == pytest.approx(4500)
    # collector - insight, concurrent phase
    assert m.throughput_delta == pytest.approx(25.25 - 40.5)
    assert m.ttft_delta_ms == pytest.approx(4500 - 600)
    assert m.contention_legacy is False  # 1.667 >= 1.5
    assert m.contention_ttft is True  # 4500 > 500 + 3000
    assert m.contention_throughput is True  # 25.25 < 0.7 * 50.5


def test_thresholds_and_legacy_rule_scale_with_agents():
    agents = [agent(f"a{i}", f"s{i}") for i in range(4)]
    phases = [Span("solo", None, 0, 4 * S), Span("concurrent", None, 5 * S, 7 * S)]
    spans = [Span("solo", f"a{i}", i * S, (i + 1) * S) for i in range(4)]
    spans += [Span("concurrent", f"a{i}", 5 * S, 7 * S) for i in range(4)]
    m = compute_run_metrics(agents, [], phases, spans, legacy_speedup=1.5)
    assert m.seed_speedup == pytest.approx(4.0)  # everyone finished together
    assert m.true_speedup == pytest.approx(2.0)  # but each took twice as long as alone
    assert m.true_efficiency == pytest.approx(50.0)
    assert m.contention_legacy is False  # 4.0 >= 1.5 * 4 / 2
    assert m.throughput_delta is None  # no tokens measured
    assert [a.slowdown for a in m.agents] == pytest.approx([2.0] * 4)


def test_without_solo_phase_true_metrics_are_null():
    agents = [agent("collector"), agent("insight")]
    phases = [Span("concurrent", None, 0, 10 * S)]
    spans = [Span("concurrent", "collector", 0, 10 * S), Span("concurrent", "insight", 0, 9 * S)]
    m = compute_run_metrics(agents, [], phases, spans)
    assert m.true_speedup is None and m.true_efficiency is None and m.solo_sum_s is None
    assert m.contention_ttft is None and m.contention_throughput is None
    assert m.seed_speedup == pytest.approx(1.9)
    assert m.coordination_overhead_ms == pytest.approx(0.0)


def test_overhead_is_wall_minus_longest_agent():
    agents = [agent("x")]
    phases = [Span("solo", None, 0, 1 * S), Span("concurrent", None, 0, 1 * S + 3 * MS)]
    spans = [Span("solo", "x", 0, 1 * S), Span("concurrent", "x", 1 * MS, 1 * S + 1 * MS)]
    m = compute_run_metrics(agents, [], phases, spans)
    assert m.coordination_overhead_ms == pytest.approx(3.0)
    assert m.true_efficiency == pytest.approx(100 / 1.003)


def test_client_decode_rate_counts_text_chunks_and_skips_zero_spans():
    # 11 tokens evaluated, the last the end-of-generation token that streamed no text: 10 text
    # chunks, 9 of them after the first, over 0.9 s. A one-chunk call adds neither tokens
    # nor time; one whose chunks arrived at once (no span) neither.
    eos = replace(
        call("solo", "x", 0, 100 * MS, 11, 0.9, 1.0),
        token_arrivals_us=chunks(100 * MS, 900 * MS, 10),
    )
    one = call("solo", "x", 2 * S, 100 * MS, 1, 0.0, 0.01)
    burst = call("solo", "x", 3 * S, 100 * MS, 5, 0.0, 0.05)
    assert eos.client_decode == (9, 900 * MS)
    assert one.client_decode is None and burst.client_decode is None
    assert client_decode_tps([eos, one, burst]) == pytest.approx(10.0)
    # a record of schema version 1 kept no arrivals: no client decode rate
    assert client_decode_tps([replace(eos, token_arrivals_us=None)]) is None


def loaded(c: CallRecord, load_s: float) -> CallRecord:
    return replace(c, server_metrics=replace(c.server_metrics, load_duration_ns=int(load_s * S)))


def test_reloads_and_the_load_excluded_true_efficiency_by_hand():
    # Solo: x 4 s (its first call paid a 1 s load), y 4 s. Concurrent phase 6 s on two
    # servers: x's call loads from 1.0 to 2.0 s (its prompt eval of 0.25 s ends at its first
    # token, 2.25 s), y's call from 1.5 to 2.5 s: the phase was loading 1.5 s, not 2.
    agents = [agent("x"), agent("y", "b")]
    phases = [Span("solo", None, 0, 8 * S), Span("concurrent", None, 10 * S, 16 * S)]
    spans = [
        Span("solo", "x", 0, 4 * S),
        Span("solo", "y", 4 * S, 8 * S),
        Span("concurrent", "x", 10 * S, 16 * S),
        Span("concurrent", "y", 10 * S, 16 * S),
    ]
    calls = [
        loaded(call("solo", "x", 0, 1500 * MS, 10, 1.0, 1.0), 1.0),
        call("solo", "y", 4 * S, 500 * MS, 10, 1.0, 1.0),
        loaded(call("concurrent", "x", 10 * S, 12250 * MS - 10 * S, 10, 1.0, 1.0), 1.0),
        loaded(call("concurrent", "y", 10 * S, 12750 * MS - 10 * S, 10, 1.0, 1.0), 1.0),
    ]
    # call() sets prompt_eval_duration = ttft / 2: x 1.125 s, y 1.375 s; put them at 0.25 s
    calls[2:] = [
        replace(c, server_metrics=replace(c.server_metrics, prompt_eval_duration_ns=250 * MS))
        for c in calls[2:]
    ]
    m = compute_run_metrics(agents, calls, phases, spans)
    assert (m.solo_reloads, m.concurrent_reloads) == (1, 2)
    assert m.solo_reload_s == pytest.approx(1.0)
    assert m.concurrent_reload_s == pytest.approx(1.5)  # [1, 2] and [1.5, 2.5] s overlap
    assert m.true_efficiency == pytest.approx(100 * 8 / 6 / 2)
    assert m.true_speedup_excl_load == pytest.approx((8 - 1) / (6 - 1.5))
    assert m.true_efficiency_excl_load == pytest.approx(100 * 7 / 4.5 / 2)
    x, y = m.agents
    assert (x.solo_reloads, x.concurrent_reloads, y.solo_reloads) == (1, 1, 0)
    assert (x.solo_reload_s, y.concurrent_reload_s) == pytest.approx((1.0, 1.0))


def test_without_solo_phase_reload_time_excludes_nothing_it_cannot():
    agents = [agent("x")]
    phases = [Span("concurrent", None, 0, 2 * S)]
    spans = [Span("concurrent", "x", 0, 2 * S)]
    calls = [loaded(call("concurrent", "x", 0, 600 * MS, 5, 0.5, 0.5), 0.2)]
    m = compute_run_metrics(agents, calls, phases, spans)
    assert m.concurrent_reloads == 1 and m.concurrent_reload_s == pytest.approx(0.2)
    assert m.solo_reloads is None and m.solo_reload_s is None
    assert m.true_efficiency_excl_load is None


def test_a_server_that_reports_no_load_leaves_reloads_unknown():
    # an OpenAI-compatible server gives no load_duration: y's reloads are unknown, x's are
    # counted, and nothing can be taken out of the run's walls
    agents = [agent("x"), agent("y", "b")]
    phases = [Span("solo", None, 0, 2 * S), Span("concurrent", None, 3 * S, 4 * S)]
    spans = [
        Span("solo", "x", 0, 1 * S),
        Span("solo", "y", 1 * S, 2 * S),
        Span("concurrent", "x", 3 * S, 4 * S),
        Span("concurrent", "y", 3 * S, 4 * S),
    ]

    def unknown(c: CallRecord) -> CallRecord:
        return replace(c, server_metrics=replace(c.server_metrics, load_duration_ns=None))

    calls = [
        loaded(call("solo", "x", 0, 300 * MS, 5, 0.5, 0.5), 0.1),
        unknown(call("solo", "y", 1 * S, 300 * MS, 5, 0.5, 0.5)),
        call("concurrent", "x", 3 * S, 300 * MS, 5, 0.5, 0.5),
        unknown(call("concurrent", "y", 3 * S, 300 * MS, 5, 0.5, 0.5)),
    ]
    m = compute_run_metrics(agents, calls, phases, spans)
    x, y = m.agents
    assert (x.solo_reloads, x.concurrent_reloads) == (1, 0)
    assert (y.solo_reloads, y.concurrent_reloads, y.solo_reload_s) == (None, None, None)
    assert (m.solo_reloads, m.concurrent_reloads) == (1, 0)  # the known ones
    assert m.solo_reload_s is None and m.concurrent_reload_s is None
    assert m.true_efficiency_excl_load is None and m.true_efficiency is not None
