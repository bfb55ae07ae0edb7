"""The sequential baseline: what a run's headline speedup is measured against.

The question a user asks is *how much sooner do my agents finish together than one after
another?* One after another, each agent would have the whole machine. So the baseline is each
agent's workload alone on a server that may use every CPU the harness may use, measured with
the run's protocol (same servers, forced unload, unmeasured load and warm-up, same seed, and
the same-work proof against the concurrent phase).

The solo phase measures each agent alone on *its config's* server. That is the baseline
already when every server of the config has the whole machine (one server per config, or
processes that each see the whole GPU); when a config splits the machine (two embedded servers
with half the CPUs each), it is not, and a third phase, ``sequential``, runs each agent alone
on its server reloaded with every CPU (``num_thread``, a runner option of Ollama's API; a
llama-server, which takes its threads when it starts, is restarted with them). The
solo phase then measures interference only: how much the agents slow each other down on the
config's own servers.

:func:`choose_baseline` decides, per config, from the study's ``baseline`` setting, the backend
and the servers' threads; the decision and its reason go into the run record
(``protocol.baseline``) and the report. :func:`with_baseline_check` flags a run whose
sequential phase did not get the whole machine (an agent slower with every CPU than with its
server's share: something else was running).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace

import msgspec

from mabench.config import ConfigSpec, Study
from mabench.measure.agents import AgentPlan
from mabench.measure.records import AgentMetrics, Baseline, RunMetrics, Validity

log = logging.getLogger(__name__)


def _names(servers: Sequence[str]) -> str:
    return ", ".join(repr(s) for s in servers)


def choose_baseline(
    study: Study, config: ConfigSpec, threads: Mapping[str, int | None], cpus: int
) -> Baseline:
    """The baseline of ``config``'s runs: ``threads`` are the llama.cpp threads each server was
    started with (embedded), ``cpus`` the CPUs the harness may use (the whole machine)."""
    setting = study.baseline
    if setting == "none":
        return Baseline(kind=None, threads=None, reason="the study sets baseline: none")
    if setting == "solo":
        return Baseline(
            kind="solo",
            threads=None,
            reason="the study declares that every server has the whole machine (baseline: "
            "solo), so the solo phase is the baseline",
        )
    if setting == "sequential":
        return _sequential(cpus, "the study sets baseline: sequential")
    return _automatic(study, config, threads, cpus)


def _sequential(cpus: int, why: str) -> Baseline:
    return Baseline(
        kind="sequential",
        threads=cpus,
        reason=f"{why}: each agent runs alone on its server, reloaded with all {cpus} CPUs",
    )


def _automatic(
    study: Study, config: ConfigSpec, threads: Mapping[str, int | None], cpus: int
) -> Baseline:
    backend = study.backend_kind
    if backend == "external":
        return Baseline(
            kind=None,
            threads=None,
            reason="external servers: how they share the machine is not known to the harness "
            "(declare baseline: solo if each has the whole machine, or sequential)",
        )
    partial = sorted({a.server for a in config.agents if _has_part(config, a.name, threads, cpus)})
    if not partial:
        where = (
            "each Ollama server may use every core"
            if backend == "ollama"
            else (f"every server of the config has all {cpus} CPUs")
        )
        return Baseline(
            kind="solo", threads=None, reason=f"{where}, so the solo phase is the baseline"
        )
    if backend == "llama_server":
        return Baseline(
            kind="sequential",
            threads=cpus,
            reason=f"server(s) {_names(partial)} have fewer threads than the machine's {cpus} "
            f"CPUs: each agent runs alone on its server, restarted with all {cpus} CPUs",
        )
    openai = sorted({a.name for a in config.agents if study.server(a.server).api == "openai"})
    if openai:
        return Baseline(
            kind=None,
            threads=None,
            reason=f"server(s) {_names(partial)} have fewer threads than the machine's {cpus} "
            f"CPUs, and agent(s) {_names(openai)} use the OpenAI API, which cannot ask a "
            "server for more (num_thread)",
        )
    return _sequential(
        cpus, f"server(s) {_names(partial)} have fewer threads than the machine's {cpus} CPUs"
    )


def _has_part(config: ConfigSpec, agent: str, threads: Mapping[str, int | None], cpus: int) -> bool:
    """Whether an agent's calls run with fewer threads than ``cpus``: its num_thread option,
    else the threads its server was started with (unset: the server uses every core)."""
    server = next(a.server for a in config.agents if a.name == agent)
    used = config.agent_options(agent).to_dict().get("num_thread") or threads.get(server)
    return used is not None and int(used) < cpus


def whole_machine_plans(plans: Sequence[AgentPlan], baseline: Baseline) -> list[AgentPlan]:
    """The agents of the sequential phase: the same work, with every CPU (``num_thread``)."""
    if baseline.threads is None:
        raise ValueError(f"a {baseline.kind} baseline has no thread count to load with")
    return [
        replace(
            p,
            info=msgspec.structs.replace(
                p.info, options={**p.info.options, "num_thread": baseline.threads}
            ),
        )
        for p in plans
    ]


#: the run flag of a sequential baseline the machine did not give (see :func:`slower_alone`)
BASELINE_SLOWER = "baseline_slower"
#: how much longer than alone on its server's share an agent may take alone with every CPU
#: before its baseline is not believed: more threads never make a quiet machine slower, but
#: timing noise on a shared one is ~10-20 %
SLOWER_TOLERANCE = 1.25


def slower_alone(agents: Sequence[AgentMetrics]) -> list[str]:
    """The agents that took longer alone with every CPU (sequential phase) than alone with
    their server's share (solo phase), beyond :data:`SLOWER_TOLERANCE`.

    On a quiet machine more threads never make an agent slower; when they do, something else
    used the machine while the sequential phase ran (llama.cpp's threads wait for each other
    at every step, so one busy core stalls them all), and the baseline overstates one after
    another: a true efficiency of 1000 % was seen beside other work."""
    return [
        a.agent
        for a in agents
        if a.sequential_wall_s is not None
        and a.solo_wall_s is not None
        and a.sequential_wall_s > SLOWER_TOLERANCE * a.solo_wall_s
    ]


def with_baseline_check(validity: Validity, metrics: RunMetrics) -> Validity:
    """``validity``, flagged :data:`BASELINE_SLOWER` when some agent was slower alone with
    every CPU than with its server's share (the run is left out of the headline)."""
    slower = slower_alone(metrics.agents)
    if not slower:
        return validity
    walls = ", ".join(
        f"{a.agent} {a.sequential_wall_s:.2f} s with every CPU, {a.solo_wall_s:.2f} s with its "
        "server's share"
        for a in metrics.agents
        if a.agent in slower
    )
    log.warning(
        "the sequential baseline is slower than the solo phase (%s): the machine was busy "
        "while it ran (run flagged %s)",
        walls,
        BASELINE_SLOWER,
    )
    return msgspec.structs.replace(validity, flags=[*validity.flags, BASELINE_SLOWER])
