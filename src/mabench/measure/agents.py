"""Agents as declarative workloads: an ordered list of prompt templates, executed call by call.

An :class:`AgentPlan` is everything one agent needs for one run (its server URL, model,
effective options, compiled prompts). Executing it produces one :class:`CallRecord` per call
and one :class:`Span` for the agent; the async and the sync executor produce identical records.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from dataclasses import dataclass, field, replace
from typing import Any

import jinja2
import msgspec

from mabench.api.ollama import Metrics
from mabench.config import AgentSpec, ConfigSpec, ServerSpec, Study
from mabench.measure import arrivals
from mabench.measure.apis import AsyncClient, SyncClient
from mabench.measure.call import CallResult, CompletionMetrics, PreparedCall
from mabench.measure.errors import RunFailed, ServerCallError
from mabench.measure.records import AgentInfo, CallRecord, ServerMetrics, Span

_ENV = jinja2.Environment(
    undefined=jinja2.StrictUndefined, keep_trailing_newline=False, autoescape=False
)


@dataclass(frozen=True)
class PromptCall:
    template: jinja2.Template
    source: str
    num_predict: int


@dataclass(frozen=True)
class AgentPlan:
    info: AgentInfo
    url: str
    endpoint: str
    system: str | None
    calls: tuple[PromptCall, ...]
    corpus: str
    #: the agent's server as the study declares it (its API and key variable)
    server: ServerSpec = field(default_factory=lambda: ServerSpec("server"))
    #: a nonce at the very start of what the model reads (cache policy salt,
    #: :mod:`mabench.measure.cache_state`): the system prompt if there is one, else each prompt
    salt: str = ""

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def system_prompt(self) -> str | None:
        """The system prompt sent, salted when the agent has one."""
        return None if self.system is None else self.salt + self.system

    def prompt(self, index: int, previous: str) -> str:
        text = (
            self.calls[index].template.render(corpus=self.corpus, previous=previous.strip()).strip()
        )
        return text if self.system is not None else self.salt + text

    def options(self, index: int) -> dict[str, Any]:
        return {**self.info.options, "num_predict": self.calls[index].num_predict}


#: The warm-up call's system and user prompt: as few tokens as a chat template allows. A
#: prompt without a system prompt gets the template's default one (SmolLM2's: 39 tokens in all
#: for "Reply with the single word: ready."; 18 with these), and on a CPU every prompt token
#: costs about what a generated one does, so the unmeasured warm-up stays short.
WARMUP_SYSTEM = "Be brief."
WARMUP_PROMPT = "Hi"


def warmup_plan(plan: AgentPlan) -> AgentPlan:
    """The agent with one tiny call: exercises every code path of a measured call (same
    client, connection, endpoint, model and options; one generated token), unmeasured."""
    call = PromptCall(template=_ENV.from_string(WARMUP_PROMPT), source="warmup", num_predict=1)
    return replace(plan, system=WARMUP_SYSTEM, calls=(call,))


def first_call_warmup(plan: AgentPlan, salt: str) -> AgentPlan:
    """The agent with one unmeasured call as long as its first measured one: the same system
    prompt and first prompt, begun with ``salt`` (so no measured phase can reuse what it left
    in a prompt cache), one generated token. It absorbs what only a server's first long
    request pays (buffers sized for a full prefill)."""
    first = replace(plan.calls[0], source=f"warmup ({plan.calls[0].source})", num_predict=1)
    return replace(plan, calls=(first,), salt=salt)


def effective_options(study: Study, config: ConfigSpec, agent: AgentSpec) -> dict[str, Any]:
    """The options an agent sends: its config options, plus the study seed unless it sets one."""
    opts = config.agent_options(agent.name).to_dict()
    opts.setdefault("seed", study.seed)
    return opts


def build_plans(
    study: Study, config: ConfigSpec, urls: dict[str, str], corpus: str
) -> list[AgentPlan]:
    plans = []
    for agent in config.agents:
        workload = study.workloads[agent.workload]
        calls = tuple(
            PromptCall(
                template=_ENV.from_string(c.prompt.read_text(encoding="utf-8")),
                source=str(c.prompt),
                num_predict=c.num_predict,
            )
            for c in workload.calls
        )
        info = AgentInfo(
            name=agent.name,
            workload=agent.workload,
            server=agent.server,
            model=agent.model,
            options=effective_options(study, config, agent),
        )
        plans.append(
            AgentPlan(
                info=info,
                url=urls[agent.server],
                endpoint=study.endpoint,
                system=workload.system,
                calls=calls,
                corpus=corpus,
                server=study.server(agent.server),
            )
        )
    return plans


class Clock:
    """The run's clock: ``perf_counter_ns`` offsets from one origin taken at run start."""

    def __init__(self) -> None:
        self.origin = time.perf_counter_ns()

    def now(self) -> int:
        return time.perf_counter_ns() - self.origin

    def rel(self, t_ns: int | None) -> int | None:
        return None if t_ns is None else t_ns - self.origin


def _record(
    plan: AgentPlan,
    index: int,
    phase: str,
    prompt: str,
    clock: Clock,
    result: CallResult | None = None,
    error: ServerCallError | None = None,
    t_sent: int | None = None,
) -> CallRecord:
    common = dict(
        phase=phase,
        agent=plan.name,
        call_index=index,
        server=plan.info.server,
        url=plan.url,
        model=plan.info.model,
        endpoint=plan.endpoint,
        options=plan.options(index),
        prompt_chars=len(prompt),
        prompt_salt=plan.salt or None,
    )
    if result is None:
        now = clock.now()
        return CallRecord(
            **common,
            t_sent_ns=t_sent if t_sent is not None else now,
            t_first_token_ns=None,
            t_last_token_ns=None,
            t_done_ns=now,
            chunks=0,
            server_metrics=None,
            done_reason=None,
            response_text="",
            error=error.info() if error else None,
            token_arrivals_us=[],
        )
    return CallRecord(
        **common,
        t_sent_ns=clock.rel(result.t_sent_ns),
        t_first_token_ns=clock.rel(result.t_first_token_ns),
        t_last_token_ns=clock.rel(result.t_last_token_ns),
        t_done_ns=clock.rel(result.t_done_ns),
        chunks=result.chunks,
        server_metrics=server_metrics(result.metrics),
        done_reason=result.done_reason,
        response_text=result.text,
        token_arrivals_us=arrivals.encode(result.arrivals_ns, result.t_sent_ns),
        reconnects=result.reconnects,
    )


def server_metrics(m: Metrics | CompletionMetrics) -> ServerMetrics:
    """What the server said of a call, in the record's terms: Ollama's final metrics, or an
    OpenAI-compatible server's counts (with their sources), llama.cpp timings and the cached
    prompt tokens if any. Ollama reports no cached count (only fewer evaluated prompt tokens
    when part of the prompt was cached), so its ``cached_prompt_tokens`` stays None."""
    if isinstance(m, Metrics):
        return ServerMetrics(
            total_duration_ns=m.total_duration,
            load_duration_ns=m.load_duration,
            prompt_eval_count=m.prompt_eval_count,
            prompt_eval_duration_ns=m.prompt_eval_duration,
            eval_count=m.eval_count,
            eval_duration_ns=m.eval_duration,
            eval_count_source="final_metrics",
            prompt_eval_count_source="final_metrics",
        )
    return ServerMetrics(
        total_duration_ns=None,
        load_duration_ns=None,
        prompt_eval_count=m.prompt_tokens,
        prompt_eval_duration_ns=None if m.prompt_ms is None else round(m.prompt_ms * 1e6),
        eval_count=m.completion_tokens,
        eval_duration_ns=None if m.predicted_ms is None else round(m.predicted_ms * 1e6),
        eval_count_source=m.completion_tokens_source,
        prompt_eval_count_source=m.prompt_tokens_source,
        cached_prompt_tokens=m.cached_prompt_tokens,
    )


def _failed(plan: AgentPlan, phase: str, index: int, exc: ServerCallError) -> RunFailed:
    info = exc.info()
    info = msgspec.structs.replace(info, phase=phase)
    return RunFailed(
        f"agent {plan.name!r} call {index} on server {plan.info.server!r} ({plan.url}) failed "
        f"in the {phase} phase: {exc.message}",
        info,
        agent=plan.name,
    )


@dataclass(frozen=True)
class CallDone:
    """One call of an agent as it ended: its index, the prompt sent and the client's result."""

    index: int
    prompt: str
    result: CallResult


@dataclass
class AgentOutcome:
    """One agent's phase: its calls' results and its span. The call records are built from
    them once the phase's clock has stopped (:meth:`records`), so that no agent's stream
    waits for another agent's bookkeeping."""

    plan: AgentPlan
    phase: str
    done: list[CallDone]
    span: Span

    def records(self, clock: Clock) -> list[CallRecord]:
        return [
            _record(self.plan, c.index, self.phase, c.prompt, clock, c.result) for c in self.done
        ]


def _agent_steps(
    plan: AgentPlan, phase: str
) -> Generator[tuple[int, dict[str, Any]], CallResult, list[CallDone]]:
    """One agent's calls, I/O-free: yields each call's index and arguments, is sent its result.

    Each prompt sees the previous answer, so the calls run strictly one after another.
    """
    calls: list[CallDone] = []
    previous = ""
    for i in range(len(plan.calls)):
        prompt = plan.prompt(i, previous)
        result = yield (
            i,
            {
                "endpoint": plan.endpoint,
                "model": plan.info.model,
                "prompt": prompt,
                "system": plan.system_prompt,
                "options": plan.options(i),
                "phase": phase,
            },
        )
        calls.append(CallDone(i, prompt, result))
        previous = result.text
    return calls


@dataclass
class ReadyAgent:
    """An agent of one phase with its first call prepared (rendered, encoded, parser made):
    :func:`ready` makes it before the phase's clock starts, and the agent's span starts when
    it sends that call, so neither phase measures the building of an agent's first request."""

    plan: AgentPlan
    phase: str
    steps: Generator[tuple[int, dict[str, Any]], CallResult, list[CallDone]]
    index: int
    first: PreparedCall


def ready(plan: AgentPlan, client: AsyncClient | SyncClient, phase: str) -> ReadyAgent:
    """``plan``'s agent for ``phase`` with its first call prepared by ``client``."""
    steps = _agent_steps(plan, phase)
    index, call = next(steps)
    return ReadyAgent(plan, phase, steps, index, client.prepare(**call))


async def run_agent_async(agent: ReadyAgent, client: AsyncClient, clock: Clock) -> AgentOutcome:
    plan, phase, steps, index, call = agent.plan, agent.phase, agent.steps, agent.index, agent.first
    t_start = clock.now()
    try:
        while True:
            try:
                result = await client.send(call)
            except ServerCallError as exc:
                raise _failed(plan, phase, index, exc) from exc
            index, kwargs = steps.send(result)
            call = client.prepare(**kwargs)
    except StopIteration as done:
        return AgentOutcome(plan, phase, done.value, Span(phase, plan.name, t_start, clock.now()))


def run_agent_sync(agent: ReadyAgent, client: SyncClient, clock: Clock) -> AgentOutcome:
    plan, phase, steps, index, call = agent.plan, agent.phase, agent.steps, agent.index, agent.first
    t_start = clock.now()
    try:
        while True:
            try:
                result = client.send(call)
            except ServerCallError as exc:
                raise _failed(plan, phase, index, exc) from exc
            index, kwargs = steps.send(result)
            call = client.prepare(**kwargs)
    except StopIteration as done:
        return AgentOutcome(plan, phase, done.value, Span(phase, plan.name, t_start, clock.now()))
