"""Per-run metrics from measured calls and spans. The definitions (also in the README):

- seed_speedup = Σ agent wall times in the concurrent phase / concurrent wall time;
  seed_efficiency = 100 × seed_speedup / N. The original study's formula: it only measures
  how evenly the agents finish, because every term was timed while the agents shared the box.
- true_speedup = Σ agent wall times in the solo phase / concurrent wall time;
  true_efficiency = 100 × true_speedup / N. What running the agents at once really saved.
- slowdown (per agent) = its concurrent wall time / its solo wall time.
- throughput (per agent and phase) = Σ eval_count / Σ eval_duration (server clock; calls whose
  server reports no eval duration, as the OpenAI API does not, are left out), and the
  client's decode rate Σ (text chunks − 1) / Σ (last token − first token) over the calls with
  at least two text chunks apart in time (:attr:`CallRecord.client_decode`).
- TTFT (per agent and phase) = mean over its calls of first non-empty token − request sent.
- throughput_delta, ttft_delta_ms = collector − insight (concurrent phase), or first agent −
  second agent when there is no collector/insight pair; null with one agent.
- contention: legacy = seed_speedup < threshold (1.5 for two agents; scaled by N / 2 for N
  agents, i.e. seed efficiency below 75 % by default); ttft = some agent's concurrent TTFT > its solo
  TTFT + threshold ms; throughput = some agent's concurrent tok/s < X % of its solo tok/s.
- coordination_overhead_ms = concurrent wall − the longest agent span inside it: time the
  harness spent starting and joining agents rather than waiting on servers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from statistics import fmean

from mabench.measure.records import (
    CONCURRENT,
    SOLO,
    AgentInfo,
    AgentMetrics,
    CallRecord,
    RunMetrics,
    Span,
)

NS = 1e9


def _ratio(num: float | None, den: float | None) -> float | None:
    if num is None or den is None or den <= 0:
        return None
    return num / den


def server_tps(calls: Iterable[CallRecord]) -> float | None:
    """Server-clock tok/s of the calls whose server reported its eval duration (None if none)."""
    ok = [
        c.server_metrics
        for c in calls
        if c.server_metrics is not None and c.server_metrics.eval_duration_ns is not None
    ]
    tokens = sum(m.eval_count for m in ok)
    duration = sum(m.eval_duration_ns for m in ok)
    return _ratio(tokens, duration / NS) if ok else None


def client_decode_tps(calls: Iterable[CallRecord]) -> float | None:
    """Σ (text chunks − 1) / Σ (last − first token) over the calls that have such a span."""
    spans = [d for c in calls if (d := c.client_decode) is not None]
    if not spans:
        return None
    return _ratio(sum(t for t, _ in spans), sum(ns for _, ns in spans) / NS)


def mean_ttft_ms(calls: Iterable[CallRecord]) -> float | None:
    values = [c.client_ttft_ns / 1e6 for c in calls if c.client_ttft_ns is not None]
    return fmean(values) if values else None


def _pair(agents: Sequence[AgentInfo]) -> tuple[str, str] | None:
    names = [a.name for a in agents]
    if "collector" in names and "insight" in names:
        return "collector", "insight"
    if len(names) >= 2:
        return names[0], names[1]
    return None


def agent_metrics(
    agent: AgentInfo, calls: Sequence[CallRecord], span: Mapping[tuple[str, str | None], float]
) -> AgentMetrics:
    """One agent's walls, slowdown, throughputs and TTFTs in each phase."""
    solo_calls = [c for c in calls if c.agent == agent.name and c.phase == SOLO]
    conc_calls = [c for c in calls if c.agent == agent.name and c.phase == CONCURRENT]
    solo_wall = span.get((SOLO, agent.name))
    conc_wall = span.get((CONCURRENT, agent.name))
    return AgentMetrics(
        agent=agent.name,
        server=agent.server,
        solo_wall_s=solo_wall,
        concurrent_wall_s=conc_wall,
        slowdown=_ratio(conc_wall, solo_wall),
        solo_tps=server_tps(solo_calls),
        concurrent_tps=server_tps(conc_calls),
        solo_client_tps=client_decode_tps(solo_calls),
        concurrent_client_tps=client_decode_tps(conc_calls),
        solo_ttft_ms=mean_ttft_ms(solo_calls),
        concurrent_ttft_ms=mean_ttft_ms(conc_calls),
    )


def _deltas(
    agents: Sequence[AgentInfo], per_agent: Sequence[AgentMetrics]
) -> tuple[float | None, float | None]:
    """throughput_delta and ttft_delta_ms: first minus second agent of the pair, concurrent."""
    pair = _pair(agents)
    if not pair:
        return None, None
    by_name = {m.agent: m for m in per_agent}
    first, second = by_name[pair[0]], by_name[pair[1]]
    tput = ttft = None
    if first.concurrent_tps is not None and second.concurrent_tps is not None:
        tput = first.concurrent_tps - second.concurrent_tps
    if first.concurrent_ttft_ms is not None and second.concurrent_ttft_ms is not None:
        ttft = first.concurrent_ttft_ms - second.concurrent_ttft_ms
    return tput, ttft


def _ttft_contention(per_agent: Sequence[AgentMetrics], ttft_ms: float) -> bool:
    return any(
        m.solo_ttft_ms is not None
        and m.concurrent_ttft_ms is not None
        and m.concurrent_ttft_ms > m.solo_ttft_ms + ttft_ms
        for m in per_agent
    )


def _throughput_contention(per_agent: Sequence[AgentMetrics], throughput_pct: float) -> bool:
    return any(
        m.solo_tps is not None
        and m.concurrent_tps is not None
        and m.concurrent_tps < throughput_pct / 100.0 * m.solo_tps
        for m in per_agent
    )


def compute_run_metrics(
    agents: Sequence[AgentInfo],
    calls: Sequence[CallRecord],
    phases: Sequence[Span],
    agent_spans: Sequence[Span],
    *,
    legacy_speedup: float = 1.5,
    ttft_ms: float = 3000.0,
    throughput_pct: float = 70.0,
) -> RunMetrics:
    """Derive :class:`RunMetrics` from one run's measurements (see the module docstring)."""
    n = len(agents)
    phase_wall = {p.phase: p.wall_ns / NS for p in phases}
    if CONCURRENT not in phase_wall:
        raise ValueError("a run needs a concurrent phase")
    span = {(s.phase, s.agent): s.wall_ns / NS for s in agent_spans}
    per_agent = [agent_metrics(a, calls, span) for a in agents]

    wall = phase_wall[CONCURRENT]
    conc_sum = sum(m.concurrent_wall_s or 0.0 for m in per_agent)
    has_solo = SOLO in phase_wall and all(m.solo_wall_s is not None for m in per_agent)
    solo_sum = sum(m.solo_wall_s or 0.0 for m in per_agent) if has_solo else None
    seed = conc_sum / wall
    true = _ratio(solo_sum, wall)
    longest = max((m.concurrent_wall_s or 0.0) for m in per_agent)
    tput_delta, ttft_delta = _deltas(agents, per_agent)
    return RunMetrics(
        n_agents=n,
        concurrent_wall_s=wall,
        concurrent_sum_s=conc_sum,
        solo_sum_s=solo_sum,
        seed_speedup=seed,
        seed_efficiency=100.0 * seed / n,
        true_speedup=true,
        true_efficiency=None if true is None else 100.0 * true / n,
        coordination_overhead_ms=(wall - longest) * 1e3,
        throughput_delta=tput_delta,
        ttft_delta_ms=ttft_delta,
        contention_legacy=seed < legacy_speedup * n / 2,
        contention_ttft=_ttft_contention(per_agent, ttft_ms) if has_solo else None,
        contention_throughput=(
            _throughput_contention(per_agent, throughput_pct) if has_solo else None
        ),
        agents=per_agent,
    )
