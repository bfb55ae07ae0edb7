"""The run protocol: one call of :func:`execute_run` measures one config × run.

1. every server answers and has the model;
2. forced unload of every model on every server, verified by /api/ps (a server that speaks
   only the OpenAI API has neither and is recorded as such: ``Isolation.unavailable``);
3. load each agent's model with its options (load time recorded; a server that speaks only
   the OpenAI API loads it with a one-token completion and no load time is known), then one
   tiny unmeasured warm-up call per agent, which also opens the agent's connection for the
   whole run (servers load, and agents on servers of their own warm up, at the same time;
   agents sharing a server load and warm up one after another, in roster order);
4. solo phase: each agent alone, one after another;
5. concurrent phase: all agents at once;
   (before each measured phase, every server's prompt cache is brought to the same state by
   its cache policy, :mod:`mabench.measure.cache_state`: reset, reloaded or salted)
6. checks of what was measured (:mod:`mabench.measure.validity`): every phase did the same
   work, and the servers hold only what the agents loaded; a failed check flags the run (or
   fails it: ``on_work_mismatch: fail``).

Where the config splits the machine (:mod:`mabench.measure.baseline`), a third phase,
``sequential``, measures the baseline: each agent alone on its server loaded with the whole
machine's threads. It has a load and warm-up of its own (step 3 with those options), before
or after steps 3-5.

The phases run in the order the study prescribes for this config and run index
(``balanced`` and ``alternate`` reverse it every other run to cancel drift). Any failure
raises :class:`RunFailed` naming the server, the step or phase and the agent; nothing is
returned that looks like a complete run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import msgspec

from mabench.config import ConfigSpec, ServerSpec, Study
from mabench.measure import environment
from mabench.measure.agents import AgentPlan, Clock, build_plans
from mabench.measure.apis import SyncClient, can_unload, inventory, open_management_clients
from mabench.measure.baseline import choose_baseline, whole_machine_plans, with_baseline_check
from mabench.measure.cache_state import (
    CacheState,
    bring_to_same_cache_state,
    open_cache_state,
    resets_between_agents,
    warmup_plans,
    with_cache_policy,
)
from mabench.measure.client import LoadResult, Timeouts
from mabench.measure.coordinators import Coordinator, PhaseOutcome, open_coordinator
from mabench.measure.corpus import load_corpus
from mabench.measure.errors import IsolationError, RunFailed, ServerCallError, ServerSetupError
from mabench.measure.isolation import force_unload, loaded_entries
from mabench.measure.metrics import compute_run_metrics
from mabench.measure.records import (
    CONCURRENT,
    RECORD_KIND,
    SCHEMA_VERSION,
    SEQUENTIAL,
    Baseline,
    CallRecord,
    Isolation,
    IsolationAfter,
    LoadRecord,
    Protocol,
    PsModel,
    RunRecord,
    ServerInfo,
    Span,
    Topology,
)
from mabench.measure.validity import (
    check_isolation_after,
    check_validity,
    compare_cache_state,
    with_cache_check,
)

log = logging.getLogger(__name__)

WARMUP = "warmup"  # the unmeasured warm-up calls: named in errors, never recorded as a phase


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _with_tag(name: str) -> str:
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def find_model(tags: list[dict[str, Any]], model: str) -> dict[str, Any] | None:
    """The /api/tags entry for ``model`` (a name without tag means ``:latest``, as in Ollama)."""
    wanted = _with_tag(model)
    for entry in tags:
        if _with_tag(str(entry.get("name") or entry.get("model") or "")) == wanted:
            return entry
    return None


def _step_failed(step: str, exc: ServerCallError) -> RunFailed:
    info = exc.info()
    info = msgspec.structs.replace(info, phase=step)
    return RunFailed(f"{step} failed on {exc.url}: {exc.message}", info)


def models_by_server(config: ConfigSpec) -> dict[str, set[str]]:
    """The servers a config's agents use (in roster order) and the models each must have."""
    needs: dict[str, set[str]] = {}
    for agent in config.agents:
        needs.setdefault(agent.server, set()).add(agent.model)
    return needs


def check_servers(
    clients: Mapping[str, SyncClient],
    urls: Mapping[str, str],
    needs: Mapping[str, set[str]],
    backend: str,
    apis: Mapping[str, str] | None = None,
    threads: Mapping[str, int | None] | None = None,
) -> list[ServerInfo]:
    """Step 1: each server answers, and has every model an agent will ask it for.

    ``apis``: the API each server is measured through (Ollama's when not given); ``threads``:
    the llama.cpp threads each server was started with (recorded as given)."""
    infos = []
    for name, client in clients.items():
        try:
            version, tags = inventory(client)
        except ServerCallError as exc:
            raise _step_failed("check", exc) from exc
        digest = size = None
        for model in sorted(needs.get(name, ())):
            entry = find_model(tags, model)
            if entry is None:
                have = ", ".join(sorted(str(t.get("name")) for t in tags)) or "none"
                hint = (
                    f" (run `ollama pull {model}`, or the pipeline's pull rule)"
                    if backend == "ollama"
                    else ""
                )
                raise ServerSetupError(
                    f"server {name!r} at {urls[name]} does not have model {model!r}{hint}; it has: {have}"
                )
            digest, size = entry.get("digest"), entry.get("size")
        infos.append(
            ServerInfo(
                name=name,
                url=urls[name],
                backend=backend,
                version=version,
                model_digest=digest,
                model_size=size,
                api=(apis or {}).get(name, "ollama"),
                threads=(threads or {}).get(name),
            )
        )
    return infos


def execute_run(
    study: Study,
    config_id: str,
    run_index: int,
    urls: Mapping[str, str],
    *,
    attempt: int = 1,
    backend: str | None = None,
    threads: Mapping[str, int | None] | None = None,
    restart: Restart | None = None,
) -> RunRecord:
    """Measure one run of ``config_id`` against the servers at ``urls`` (server name → URL);
    ``threads``: the llama.cpp threads each server was started with, for the record;
    ``restart``: where servers take their threads only when they start, how to restart them
    with other threads (the sequential baseline's whole machine)."""
    config = study.config(config_id)
    missing = sorted({a.server for a in config.agents} - set(urls))
    if missing:
        raise ServerSetupError(f"no URL for server(s) {', '.join(missing)} of config {config_id!r}")
    timeouts = Timeouts(**study.timeouts)
    started_at = _now_iso()
    corpus = load_corpus(study.corpus.get("path"), int(study.corpus["files"]))
    plans = build_plans(study, config, dict(urls), corpus.summary)
    specs = {s.name: s for s in study.servers}
    backend = backend or study.backend_kind
    baseline = choose_baseline(study, config, threads or {}, environment.available_cpus())
    order = study.phase_order_for(run_index, config_id, sequential=baseline.kind == SEQUENTIAL)
    blocks = phase_blocks(order, plans, baseline, restarts=restart is not None)
    prepared = prepare_servers(config, urls, timeouts, backend, servers=specs, threads=threads)
    cache = open_cache_state(specs, urls, timeouts, backend)
    measured = measure_phases(
        config,
        blocks,
        timeouts,
        LoadTarget(specs, urls, backend, restart),
        label=f"{config_id} run {run_index}",
        cache=cache,
    )
    after = isolation_after(urls, timeouts, measured.expected, backend, specs, cache.held)
    validity = check_validity(
        measured.calls, after, study.work_mismatch_policy, compare_texts=study.same_text
    )
    validity = with_cache_check(validity, compare_cache_state(measured.calls, cache.assured))
    metrics = compute_run_metrics(
        [p.info for p in plans],
        measured.calls,
        measured.phases,
        measured.spans,
        baseline=baseline.kind,
        legacy_speedup=study.contention["legacy_speedup"],
        ttft_ms=study.contention["ttft_ms"],
        throughput_pct=study.contention["throughput_pct"],
    )
    validity = with_baseline_check(validity, metrics)
    return RunRecord(
        study=study.name,
        config_id=config_id,
        scenario=config.scenario,
        run_index=run_index,
        attempt=attempt,
        started_at=started_at,
        finished_at=_now_iso(),
        protocol=Protocol(
            coordinator=config.coordinator,
            phase_order=order,
            forced_unload=True,
            request_timeout_s=timeouts.request_s,
            seed=study.seed,
            baseline=baseline,
        ),
        topology=Topology(
            servers=[with_cache_policy(with_settings(study, s), cache) for s in prepared.servers],
            agents=[p.info for p in plans],
        ),
        isolation=prepared.isolation,
        loads=measured.loads,
        phases=measured.phases,
        agent_spans=measured.spans,
        calls=measured.calls,
        environment=environment.capture(study.config_hash(config_id)),
        metrics=metrics,
        schema_version=SCHEMA_VERSION,
        kind=RECORD_KIND,
        validity=validity,
    )


def isolation_after(
    urls: Mapping[str, str],
    timeouts: Timeouts,
    expected: Mapping[str, list[PsModel]],
    backend: str,
    servers: Mapping[str, ServerSpec],
    held: Mapping[str, list[PsModel]] | None = None,
) -> IsolationAfter:
    """Step 6: what every server that lists its loaded models holds after the measured
    phases, and held between them (``held``: listed right before each cache reload), against
    ``expected`` (the servers without such a list are in ``Isolation.unavailable``)."""
    with ExitStack() as stack:
        clients = open_management_clients(stack, servers, urls, timeouts, backend)
        loaded = loaded_entries(clients, "validity")
    for server, entries in (held or {}).items():
        seen = loaded.setdefault(server, [])
        seen.extend(e for e in entries if e not in seen)
    return check_isolation_after(dict(expected), loaded)


def with_settings(study: Study, server: ServerInfo) -> ServerInfo:
    """``server`` with its concurrency settings: set by the pool (ollama) or declared."""
    settings = study.server_settings(server.name)
    source = study.server_settings_source if settings else None
    return msgspec.structs.replace(server, settings=settings, settings_source=source)


@dataclass(frozen=True)
class PreparedServers:
    """Steps 1-2: the servers checked, and the isolation evidence."""

    servers: list[ServerInfo]
    isolation: Isolation


def prepare_servers(
    config: ConfigSpec,
    urls: Mapping[str, str],
    timeouts: Timeouts,
    backend: str,
    servers: Mapping[str, ServerSpec] | None = None,
    threads: Mapping[str, int | None] | None = None,
) -> PreparedServers:
    """Steps 1-2 of the protocol, on every server at ``urls``, through Ollama's API wherever
    the server speaks it (:mod:`mabench.measure.apis`); ``servers``: the study's servers."""
    needs = models_by_server(config)
    specs = servers or {}
    apis = {name: spec.api for name, spec in specs.items()}
    with ExitStack() as stack:
        clients = open_management_clients(stack, specs, urls, timeouts, backend)
        # 1. every server answers and has the model
        infos = check_servers({n: clients[n] for n in needs}, urls, needs, backend, apis, threads)
        # 2. forced unload everywhere (idle servers too: they must not hold memory or CPU)
        isolation = force_unload(clients, verify_timeout_s=min(timeouts.load_s, 60.0))
        if not isolation.verified:
            raise IsolationError(
                f"models still loaded after the forced unload: {isolation.loaded_after}; "
                "another client may be using these servers"
            )
    return PreparedServers(infos, isolation)


#: brings the config's servers up with this many threads each (None: the config's own) and
#: returns their URLs; for servers that take their threads only when they start
Restart = Callable[[int | None], Mapping[str, str]]


@dataclass(frozen=True)
class LoadTarget:
    """Where a block's loads go: the study's servers, their URLs, the backend; ``restart``
    where a block's threads are set by restarting the servers (llama-server) rather than by
    each load's ``num_thread``."""

    servers: Mapping[str, ServerSpec]
    urls: Mapping[str, str]
    backend: str
    restart: Restart | None = None

    def load(
        self, block: PhaseBlock, timeouts: Timeouts
    ) -> tuple[list[LoadResult], dict[str, list[PsModel]]]:
        """Step 3 for ``block``'s agents, through management clients opened for it (after
        restarting the servers with the block's threads, where that is how they are set)."""
        plans = block.plans
        if self.restart is not None:
            urls = self.restart(block.threads)
            moved = sorted(n for n in self.urls if n in urls and urls[n] != self.urls[n])
            if moved:
                raise ServerSetupError(
                    f"server(s) {', '.join(moved)} came back at another URL after a restart "
                    "with new threads; give them fixed ports (servers[].port)"
                )
        with ExitStack() as stack:
            clients = open_management_clients(
                stack, self.servers, self.urls, timeouts, self.backend
            )
            return load_agent_models(clients, plans)


@dataclass(frozen=True)
class PhaseBlock:
    """Measured phases that share one load and warm-up: the agents as the config sets them
    up (solo, concurrent), or with the whole machine (sequential)."""

    phases: tuple[str, ...]
    plans: tuple[AgentPlan, ...]
    #: the threads of every server in this block, where a restart sets them (None: the
    #: config's own)
    threads: int | None = None


def phase_blocks(
    order: Sequence[str], plans: Sequence[AgentPlan], baseline: Baseline, restarts: bool = False
) -> list[PhaseBlock]:
    """``order`` cut where the agents' options change: the sequential phase is a block of its
    own, loaded with the whole machine's threads (each load's ``num_thread``, or with
    ``restarts`` the servers restarted with them)."""
    blocks: list[PhaseBlock] = []
    for phase in order:
        sequential = phase == SEQUENTIAL
        if blocks and not sequential and SEQUENTIAL not in blocks[-1].phases:
            blocks[-1] = replace(blocks[-1], phases=(*blocks[-1].phases, phase))
            continue
        if sequential and restarts:
            blocks.append(PhaseBlock((phase,), tuple(plans), baseline.threads))
            continue
        agents = whole_machine_plans(plans, baseline) if sequential else plans
        blocks.append(PhaseBlock((phase,), tuple(agents)))
    return blocks


def load_agent_models(
    clients: Mapping[str, SyncClient], plans: Sequence[AgentPlan]
) -> tuple[list[LoadResult], dict[str, list[PsModel]]]:
    """Step 3: each agent's load, and every /api/ps entry the loads left on each server whose
    API lists its loaded models.

    Servers load at the same time, one thread each (loads are unmeasured, and each server is
    its own process); the agents of one server load one after another, in roster order, so
    what each server holds afterwards is what its last agent loaded, as before."""
    by_server: dict[str, list[int]] = {}
    for i, plan in enumerate(plans):
        by_server.setdefault(plan.info.server, []).append(i)
    expected = {name: [] for name, c in clients.items() if can_unload(c)}
    with ThreadPoolExecutor(max_workers=max(1, len(by_server)), thread_name_prefix="load") as ex:
        futures = {
            server: ex.submit(_load_on_server, clients[server], [plans[i] for i in idx], expected)
            for server, idx in by_server.items()
        }
    loaded: list[LoadResult | None] = [None] * len(plans)
    for server, idx in by_server.items():
        for i, result in zip(idx, futures[server].result(), strict=True):
            loaded[i] = result
    return [r for r in loaded if r is not None], expected


def _load_on_server(
    client: SyncClient, plans: Sequence[AgentPlan], expected: dict[str, list[PsModel]]
) -> list[LoadResult]:
    """One server's loads, one after another; each adds what /api/ps then lists to
    ``expected[server]`` (only this thread writes that entry)."""
    results = []
    for plan in plans:
        server = plan.info.server
        results.append(load_agent_model(client, plan))
        if server not in expected:
            continue
        for entry in loaded_entries({server: client}, "load")[server]:
            if entry not in expected[server]:
                expected[server].append(entry)
    return results


def load_agent_model(client: SyncClient, plan: AgentPlan) -> LoadResult:
    try:
        return client.load(plan.info.model, plan.info.options, keep_alive=-1)
    except ServerCallError as exc:
        raise _step_failed("load", exc) from exc


@dataclass(frozen=True)
class MeasuredPhases:
    """Steps 3-5: the phases' spans, each agent's span per phase, every call, each agent's
    load per block, and what the last block's loads left on each server."""

    phases: list[Span]
    spans: list[Span]
    calls: list[CallRecord]
    loads: list[LoadRecord]
    expected: dict[str, list[PsModel]]


def measure_phases(
    config: ConfigSpec,
    blocks: Sequence[PhaseBlock],
    timeouts: Timeouts,
    target: LoadTarget,
    label: str,
    cache: CacheState | None = None,
) -> MeasuredPhases:
    """With one client (and connection) per agent for the whole run, block by block: load
    the block's agents' models, warm every agent's code path up (unmeasured), then run the
    block's measured phases in order."""
    clock = Clock()
    phases, spans, calls, loads = [], [], [], []
    expected: dict[str, list[PsModel]] = {}
    with open_coordinator(config.coordinator, timeouts) as coordinator:
        for block in blocks:
            loaded, expected = target.load(block, timeouts)
            warm = warm_up(coordinator, block.plans)
            loads.extend(load_records(block, loaded, warm))
            for phase in block.phases:
                log.info("%s: %s phase", label, phase)
                outcome = run_measured_phase(coordinator, cache, block.plans, phase, clock)
                phases.append(outcome.phase)
                spans.extend(outcome.agent_spans)
                calls.extend(outcome.calls)
    return MeasuredPhases(phases, spans, calls, loads, expected)


def run_measured_phase(
    coordinator: Coordinator,
    cache: CacheState | None,
    plans: Sequence[AgentPlan],
    phase: str,
    clock: Clock,
) -> PhaseOutcome:
    """One measured phase from the same cache state: every agent at once (concurrent), else
    one after another, each after its own server's reset where a server with a reset serves
    several of them (the phase's span then runs from the first agent's start to the last
    one's end; only the agents' own spans are measured alone)."""
    concurrent = phase == CONCURRENT
    if concurrent or not resets_between_agents(cache, plans):
        now = bring_to_same_cache_state(cache, plans)
        return coordinator.run_phase(now, phase, concurrent=concurrent, clock=clock)
    outcomes = [
        coordinator.run_phase(
            bring_to_same_cache_state(cache, [plan]), phase, concurrent=False, clock=clock
        )
        for plan in plans
    ]
    first, last = outcomes[0].phase, outcomes[-1].phase
    return PhaseOutcome(
        phase=Span(phase, None, first.t_start_ns, last.t_end_ns),
        agent_spans=[s for o in outcomes for s in o.agent_spans],
        calls=[c for o in outcomes for c in o.calls],
    )


def warm_up(coordinator: Coordinator, plans: Sequence[AgentPlan]) -> PhaseOutcome:
    """One unmeasured warm-up call per agent. Agents on servers of their own warm up at the
    same time (each server its own process); agents that share a server warm up one after
    another in roster order, so the options each server holds when the measured phases start
    are always the same."""
    servers = [p.info.server for p in plans]
    own_servers = len(set(servers)) == len(servers)
    return coordinator.run_phase(warmup_plans(plans), WARMUP, concurrent=own_servers, clock=Clock())


def load_records(
    block: PhaseBlock, loaded: Sequence[LoadResult], warmup: PhaseOutcome
) -> list[LoadRecord]:
    warm_ns = {s.agent: s.wall_ns for s in warmup.agent_spans}
    return [
        LoadRecord(
            agent=plan.name,
            server=plan.info.server,
            model=plan.info.model,
            options=plan.info.options,
            load_duration_ns=res.load_duration_ns,
            wall_ns=res.wall_ns,
            warmup_wall_ns=warm_ns[plan.name],
            phases=list(block.phases),
        )
        for plan, res in zip(block.plans, loaded, strict=True)
    ]
