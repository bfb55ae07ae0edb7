"""Per-run metrics from measured calls and spans. The definitions (also in the README):

- seed_speedup = Σ agent wall times in the concurrent phase / concurrent wall time;
  seed_efficiency = 100 × seed_speedup / N. The original study's formula: it only measures
  how evenly the agents finish, because every term was timed while the agents shared the box.
- true_speedup = Σ agent wall times in the baseline / concurrent wall time; true_efficiency
  = 100 × true_speedup / N. How much sooner the agents finished together than one after
  another, each with the whole machine. The baseline (:mod:`mabench.measure.baseline`) is the
  sequential phase, or the solo phase where every server had the whole machine; without one,
  both are null.
- interference_speedup = Σ agent wall times in the solo phase / concurrent wall time;
  interference_efficiency = 100 × that / N. Each agent alone on the config's own servers
  against all of them together there: how much the agents slow each other down. Equal to
  true_speedup where the solo phase is the baseline.
- slowdown (per agent) = its concurrent wall time / its solo wall time (interference);
  sequential_slowdown = its concurrent wall time / its baseline wall time.
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
- reloads: a call whose server load_duration is > 0 paid a model load inside its phase (on a
  server shared by agents with different runner options, every switch reloads). Per agent
  and phase: how many, and the sum of their load_duration. Per run: solo_reload_s = Σ
  load_duration of the solo phase's calls (they run one at a time); concurrent_reload_s =
  the time during the concurrent phase in which at least one call was loading: the union
  of the load intervals, each placed on the run's clock right before its call's prompt
  evaluation (it ends prompt_eval_duration before the call's first token, or before its
  eval_duration when no text came), clipped to the call. On one server loads never
  overlap, so this is the sum of their load_duration.
- true_speedup_excl_load = (Σ solo agent wall times − solo_reload_s) / (concurrent wall −
  concurrent_reload_s); true_efficiency_excl_load = 100 × that / N. What interference
  efficiency would be if the phases had paid no model load; equal to it without reloads.
  A server that reports no load_duration (the OpenAI API) leaves its agents' reload counts
  unknown (null) and the run's reload times and load-excluded efficiency too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from statistics import fmean

from mabench.measure.records import (
    CONCURRENT,
    SEQUENTIAL,
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


def _load_ns(call: CallRecord) -> int | None:
    """The call's server load_duration (ns); None where the server reports none (the OpenAI
    API does not)."""
    m = call.server_metrics
    return None if m is None else m.load_duration_ns


def reloads(calls: Iterable[CallRecord]) -> tuple[int | None, float | None]:
    """How many of ``calls`` paid a model load (load_duration > 0), and their Σ load (s), over
    the calls whose server reports a load_duration; (None, None) when none of them does."""
    calls = list(calls)
    known = [ns for c in calls if (ns := _load_ns(c)) is not None]
    if calls and not known:
        return None, None
    loads = [ns for ns in known if ns > 0]
    return len(loads), sum(loads) / NS


def load_interval(call: CallRecord) -> tuple[int, int] | None:
    """Where a call's model load lies on the run's clock (ns), or None if it paid none (or its
    server does not say): it ends right before the call's prompt evaluation, clipped to the
    call's span."""
    m = call.server_metrics
    if m is None or not m.load_duration_ns:
        return None
    anchor = call.t_first_token_ns
    if anchor is None:
        anchor = call.t_done_ns - (m.eval_duration_ns or 0)
    prefill = m.prompt_eval_duration_ns or 0
    end = max(call.t_sent_ns, min(anchor, call.t_done_ns) - prefill)
    return max(call.t_sent_ns, end - m.load_duration_ns), end


def union_s(intervals: Iterable[tuple[int, int]]) -> float:
    """Total length (s) covered by the ``(start_ns, end_ns)`` intervals."""
    total, reach = 0, None
    for start, end in sorted(intervals):
        if reach is None or start > reach:
            total += end - start
            reach = end
        elif end > reach:
            total += end - reach
            reach = end
    return total / NS


def _pair(agents: Sequence[AgentInfo]) -> tuple[str, str] | None:
    names = [a.name for a in agents]
    if "collector" in names and "insight" in names:
        return "collector", "insight"
    if len(names) >= 2:
        return names[0], names[1]
    return None


def agent_metrics(
    agent: AgentInfo,
    calls: Sequence[CallRecord],
    span: Mapping[tuple[str, str | None], float],
    baseline: str | None = SOLO,
) -> AgentMetrics:
    """One agent's walls, slowdowns, throughputs and TTFTs in each phase; ``baseline``: the
    phase that is its baseline (sequential or solo; None: none)."""
    solo_calls = [c for c in calls if c.agent == agent.name and c.phase == SOLO]
    conc_calls = [c for c in calls if c.agent == agent.name and c.phase == CONCURRENT]
    solo_wall = span.get((SOLO, agent.name))
    conc_wall = span.get((CONCURRENT, agent.name))
    base_wall = span.get((baseline, agent.name)) if baseline else None
    solo_reloads, solo_reload_s = reloads(solo_calls)
    conc_reloads, conc_reload_s = reloads(conc_calls)
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
        solo_reloads=solo_reloads if solo_wall is not None else None,
        concurrent_reloads=conc_reloads if conc_wall is not None else None,
        solo_reload_s=solo_reload_s if solo_wall is not None else None,
        concurrent_reload_s=conc_reload_s if conc_wall is not None else None,
        sequential_wall_s=span.get((SEQUENTIAL, agent.name)),
        sequential_slowdown=_ratio(conc_wall, base_wall),
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
    baseline: str | None = SOLO,
    legacy_speedup: float = 1.5,
    ttft_ms: float = 3000.0,
    throughput_pct: float = 70.0,
) -> RunMetrics:
    """Derive :class:`RunMetrics` from one run's measurements (see the module docstring);
    ``baseline``: the phase that is the baseline (``sequential``, ``solo``, or None)."""
    n = len(agents)
    phase_wall = {p.phase: p.wall_ns / NS for p in phases}
    if CONCURRENT not in phase_wall:
        raise ValueError("a run needs a concurrent phase")
    span = {(s.phase, s.agent): s.wall_ns / NS for s in agent_spans}
    per_agent = [agent_metrics(a, calls, span, baseline) for a in agents]

    wall = phase_wall[CONCURRENT]
    conc_sum = sum(m.concurrent_wall_s or 0.0 for m in per_agent)
    has_solo = SOLO in phase_wall and all(m.solo_wall_s is not None for m in per_agent)
    solo_sum = sum(m.solo_wall_s or 0.0 for m in per_agent) if has_solo else None
    sequential_sum = phase_sum(span, SEQUENTIAL, agents)
    seed = conc_sum / wall
    interference = _ratio(solo_sum, wall)
    true = _ratio({SOLO: solo_sum, SEQUENTIAL: sequential_sum}.get(baseline or ""), wall)
    longest = max((m.concurrent_wall_s or 0.0) for m in per_agent)
    tput_delta, ttft_delta = _deltas(agents, per_agent)
    reload_time = _reload_time(calls, has_solo)
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
        sequential_sum_s=sequential_sum,
        interference_speedup=interference,
        interference_efficiency=None if interference is None else 100.0 * interference / n,
        solo_reloads=_known_sum(m.solo_reloads for m in per_agent) if has_solo else None,
        concurrent_reloads=_known_sum(m.concurrent_reloads for m in per_agent),
        solo_reload_s=reload_time.solo_s,
        concurrent_reload_s=reload_time.concurrent_s,
        true_speedup_excl_load=reload_time.speedup(solo_sum, wall),
        true_efficiency_excl_load=reload_time.efficiency(solo_sum, wall, n),
    )


def phase_sum(
    span: Mapping[tuple[str, str | None], float], phase: str, agents: Sequence[AgentInfo]
) -> float | None:
    """Σ the agents' wall times in ``phase``; None unless every agent has one."""
    walls = [span.get((phase, a.name)) for a in agents]
    return None if any(w is None for w in walls) else sum(w for w in walls if w is not None)


@dataclass(frozen=True)
class _ReloadTime:
    """The model-load time inside each measured phase (see the module docstring)."""

    solo_s: float | None
    concurrent_s: float | None

    def speedup(self, solo_sum: float | None, wall: float) -> float | None:
        if solo_sum is None or self.solo_s is None or self.concurrent_s is None:
            return None
        return _ratio(solo_sum - self.solo_s, wall - self.concurrent_s)

    def efficiency(self, solo_sum: float | None, wall: float, n: int) -> float | None:
        speedup = self.speedup(solo_sum, wall)
        return None if speedup is None else 100.0 * speedup / n


def _known_sum(values: Iterable[int | None]) -> int | None:
    """The sum of the values that are known; None when none is."""
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def _reload_time(calls: Sequence[CallRecord], has_solo: bool) -> _ReloadTime:
    """The load time inside each phase; unknown (None) unless every call's server reports its
    load_duration: a load it does not report cannot be taken out."""
    if any(_load_ns(c) is None for c in calls):
        return _ReloadTime(solo_s=None, concurrent_s=None)
    conc = [iv for c in calls if c.phase == CONCURRENT and (iv := load_interval(c)) is not None]
    solo_s = reloads(c for c in calls if c.phase == SOLO)[1] if has_solo else None
    return _ReloadTime(solo_s=solo_s, concurrent_s=union_s(conc))
