"""Run metrics against values computed by hand."""

from __future__ import annotations

from dataclasses import replace

import pytest

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
