"""The run record: one JSON document per (study, config, run), versioned, defined once.

A run record holds everything measured in one run (every call with client and server
timings), how it was measured (protocol, topology, isolation evidence, environment) and the
metrics derived from it. It is written atomically: a reader never sees half a record, and a
failed run leaves no record that looks complete.

The record is defined once, as the msgspec Structs below: their types are its schema. Reading
a record decodes and validates it in one pass (types, enums, bounds, required and unknown
fields; a ``None`` where a field is nullable is always valid), and a record that does not
match raises :class:`RecordError` naming the file, the path in the JSON
(``$.calls[3].t_sent_ns``) and what is wrong. The JSON schema published for other readers,
``schemas/run_record.schema.json``, is generated from the Structs (:func:`record_schema`;
``python -m mabench.measure.schema_file`` rewrites it).
"""

from __future__ import annotations

import errno
import json
import os
import re
import tempfile
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import msgspec
from msgspec import Meta, field

#: the record versions this code reads (a field added since is optional, with a default)
SchemaVersion = Literal[1, 2, 3]
READABLE_VERSIONS: tuple[int, ...] = get_args(SchemaVersion)
SCHEMA_VERSION = 3
RecordKind = Literal["mabench.run"]
RECORD_KIND: str = get_args(RecordKind)[0]

SOLO = "solo"
CONCURRENT = "concurrent"
SEQUENTIAL = "sequential"
PHASES = (SOLO, CONCURRENT)

Phase = Literal["solo", "concurrent", "sequential"]
#: where a server metric's count came from
CountSource = Literal["final_metrics", "usage", "timings", "stream"]
#: how a server's cache was brought to the same state before each measured phase
#: (mabench.measure.cache_state)
CacheReset = Literal["none", "reload", "endpoint", "salt"]
NonNegative = Annotated[int, Meta(ge=0)]
Positive = Annotated[int, Meta(ge=1)]
NonNegativeSeconds = Annotated[float, Meta(ge=0)]

SCHEMA_ID = "https://github.com/mabench/mabench/schemas/run_record.schema.json"
SCHEMA_TITLE = "mabench run record"

_SOURCE_DOC = (
    "Where the count came from: final_metrics (Ollama), usage or timings (OpenAI API), stream "
    "(the client counted the streamed content deltas). Absent or null in records written before."
)
_V1_ABSENT = "Absent or null in schema version 1."
_V2_ABSENT = "Absent or null in schema versions 1 and 2."


class _Part(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A part of the run record: immutable, and no key in its JSON that is not a field."""


class ErrorInfo(_Part):
    """A failure: what kind, the server's or library's message, where and in which phase."""

    kind: str
    message: str
    url: str | None
    phase: str | None
    status: int | None


class ServerMetrics(_Part):
    """What the server said of one call, in nanoseconds: Ollama's final-chunk metrics, or an
    OpenAI-compatible server's counts, where a duration the API does not give is null, never
    zero (llama.cpp's timings give the prompt and eval durations)."""

    total_duration_ns: NonNegative | None
    load_duration_ns: NonNegative | None
    prompt_eval_count: NonNegative | None
    prompt_eval_duration_ns: NonNegative | None
    eval_count: NonNegative
    eval_duration_ns: NonNegative | None
    eval_count_source: Annotated[CountSource | None, Meta(description=_SOURCE_DOC)] = None
    prompt_eval_count_source: Annotated[CountSource | None, Meta(description=_SOURCE_DOC)] = None
    cached_prompt_tokens: Annotated[
        NonNegative | None,
        Meta(
            description="Prompt tokens the server took from its prompt cache, as it reported "
            "them: usage.prompt_tokens_details.cached_tokens (OpenAI API, vLLM, SGLang) or "
            "timings.cache_n (llama.cpp). Null where the server did not say (Ollama's API, "
            "llama-cpp-python's server) and in records written before."
        ),
    ] = None


class CallRecord(_Part):
    """One LLM call. Client times are perf_counter_ns offsets from the run's clock origin."""

    phase: Phase
    agent: str
    call_index: NonNegative
    server: str
    url: str
    model: str
    endpoint: Literal["chat", "generate"]
    options: dict[str, Any]
    prompt_chars: NonNegative
    t_sent_ns: NonNegative
    t_first_token_ns: int | None
    t_last_token_ns: int | None
    t_done_ns: NonNegative
    chunks: NonNegative
    server_metrics: ServerMetrics | None
    done_reason: str | None
    response_text: str
    error: ErrorInfo | None = None
    token_arrivals_us: Annotated[
        list[NonNegative] | None,
        Meta(
            description="Arrival of each text-bearing chunk in integer microseconds, "
            "delta-encoded: the first from t_sent, each next from the previous (see "
            f"mabench.measure.arrivals). {_V1_ABSENT}"
        ),
    ] = None
    reconnects: Annotated[
        NonNegative | None,
        Meta(
            description="Connections the call opened: 0 when it reused its agent's open "
            f"connection (opened by the unmeasured warm-up). {_V1_ABSENT}"
        ),
    ] = None
    prompt_salt: Annotated[
        str | None,
        Meta(
            description="The nonce the call's prompt began with (cache policy salt: new for "
            "every phase and agent, so no phase reuses another's cached prefix); null when "
            "none, and in records written before."
        ),
    ] = None

    @property
    def client_ttft_ns(self) -> int | None:
        if self.t_first_token_ns is None:
            return None
        return self.t_first_token_ns - self.t_sent_ns

    @property
    def client_wall_ns(self) -> int:
        return self.t_done_ns - self.t_sent_ns

    @property
    def inter_token_us(self) -> list[int] | None:
        """Gaps between consecutive text-bearing chunks (µs); None when not recorded."""
        if self.token_arrivals_us is None:
            return None
        return self.token_arrivals_us[1:]

    @property
    def client_decode(self) -> tuple[int, int] | None:
        """The tokens the client saw after the first one and the time they took:
        ``(text chunks - 1, last token - first token)`` in ns.

        Counted from the text-bearing chunks (``token_arrivals_us``), not ``eval_count``
        (which includes the end-of-generation token that brings no text). None when there is
        no such span: fewer than two text chunks, no time between the first and the last, or
        a record of schema version 1 (which did not keep the arrivals)."""
        first, last, arrivals = self.t_first_token_ns, self.t_last_token_ns, self.token_arrivals_us
        if first is None or last is None or arrivals is None or len(arrivals) < 2 or last <= first:
            return None
        return len(arrivals) - 1, last - first


class Span(_Part):
    """A measured interval on the run's clock: a phase, or one agent within a phase."""

    phase: Phase
    agent: str | None
    t_start_ns: int
    t_end_ns: int

    @property
    def wall_ns(self) -> int:
        return self.t_end_ns - self.t_start_ns


class LoadRecord(_Part):
    """Step 3 of the protocol: one agent's model loaded with its options, then warmed up.

    The warm-up is one unmeasured one-token call through the run's coordinator, so one-time
    costs (first connection, first decode, interpreter warm-up) do not land on whichever
    measured phase happens to come first."""

    agent: str
    server: str
    model: str
    options: dict[str, Any]
    load_duration_ns: Annotated[
        int | None, Meta(description="Null where the API reports no load time (OpenAI).")
    ]
    wall_ns: int
    warmup_wall_ns: NonNegative
    phases: Annotated[
        list[Phase] | None,
        Meta(
            description="The measured phases this load and warm-up served (the sequential "
            f"phase has loads of its own, with the whole machine's threads). {_V2_ABSENT}"
        ),
    ] = None


class Isolation(_Part):
    """Step 2 of the protocol: models loaded on each server before and after the forced unload.

    verified: every server that has an unload had no model loaded after it."""

    loaded_before: dict[str, list[str]]
    loaded_after: dict[str, list[str]]
    verified: bool
    unavailable: Annotated[
        list[str],
        Meta(
            description="Servers whose API has no unload and no list of loaded models (OpenAI): "
            "neither the forced unload nor its check was done there."
        ),
    ] = field(default_factory=list)


class ServerInfo(_Part):
    """A server of the run; api: the API the agents were measured through."""

    name: str
    url: str
    backend: str
    version: str | None
    model_digest: str | None
    model_size: int | None
    api: Annotated[
        Literal["ollama", "openai"],
        Meta(description="The API the agents were measured through (absent: ollama)."),
    ] = "ollama"
    threads: Annotated[
        Positive | None,
        Meta(
            description="llama.cpp threads the pool started the server with (embedded and "
            f"llama_server backends); null when the server decides. {_V1_ABSENT}"
        ),
    ] = None
    settings: Annotated[
        dict[str, str],
        Meta(
            description="Concurrency settings of the server (OLLAMA_NUM_PARALLEL, "
            "OLLAMA_MAX_LOADED_MODELS, OLLAMA_KEEP_ALIVE; llama-server's parallel and ctx_size; "
            f"an external server's declared parallel, ...). {_V1_ABSENT}"
        ),
    ] = field(default_factory=dict)
    settings_source: Annotated[
        Literal["set", "declared"] | None,
        Meta(
            description="set: the pool started the server with these settings (ollama, "
            "llama_server); "
            "declared: the config says so and nothing observed them (external); null: none."
        ),
    ] = None
    cache_reset: Annotated[
        CacheReset | None,
        Meta(
            description="How the server's prompt cache was brought to the same state before "
            "each measured phase: none (nothing done; the embedded server clears its KV cache "
            "per request), reload (unmeasured unload and load), endpoint (the server's cache "
            "reset), salt (a per-phase nonce at the start of every prompt). Null in records "
            "written before."
        ),
    ] = None
    cache_reset_how: Annotated[
        str | None,
        Meta(description="That policy in words: the endpoint called, or why it was chosen."),
    ] = None


class AgentInfo(_Part):
    """An agent of the run: its workload, server, model and options."""

    name: str
    workload: str
    server: str
    model: str
    options: dict[str, Any]


class Topology(_Part):
    """The servers of the run and the agents on them."""

    servers: list[ServerInfo]
    agents: list[AgentInfo]

    @property
    def kind(self) -> str:
        """``dedicated`` (one server per agent), ``shared`` (one server for all) or ``mixed``."""
        used = [a.server for a in self.agents]
        if len(set(used)) == len(used):
            return "dedicated"
        if len(set(used)) == 1:
            return "shared"
        return "mixed"


class Baseline(_Part):
    """What the run's speedup is measured against: the agents one after another, each with
    the whole machine (mabench.measure.baseline)."""

    kind: Annotated[
        Literal["sequential", "solo"] | None,
        Meta(
            description="sequential: a phase of its own, each agent alone on its server loaded "
            "with the whole machine's threads; solo: the solo phase, because every server "
            "already had the whole machine; null: no baseline could be measured (only the "
            "interference numbers are known)"
        ),
    ]
    threads: Annotated[
        Positive | None,
        Meta(description="llama.cpp threads of the whole machine (num_thread); null if not set"),
    ]
    reason: Annotated[str, Meta(description="Why this baseline, in words, for the report")]


class Protocol(_Part):
    """How the run was measured: coordinator, order of the measured phases, forced unload."""

    coordinator: Literal["asyncio", "threads"]
    phase_order: Annotated[list[Phase], Meta(min_length=1, extra_json_schema={"uniqueItems": True})]
    forced_unload: bool
    request_timeout_s: float
    seed: int | None
    baseline: Annotated[
        Baseline | None,
        Meta(
            description=f"The sequential baseline. {_V2_ABSENT} (their baseline was the solo phase)"
        ),
    ] = None

    def __post_init__(self) -> None:
        if len(set(self.phase_order)) != len(self.phase_order):
            raise ValueError(f"phase_order {self.phase_order} names a phase twice")


class SlurmJob(_Part):
    """The Slurm allocation a run was measured in (from the job step's environment)."""

    job_id: Annotated[str, Meta(description="SLURM_JOB_ID")]
    cluster: Annotated[str | None, Meta(description="SLURM_CLUSTER_NAME")]
    node: Annotated[str, Meta(description="SLURMD_NODENAME: the node that measured")]
    partition: Annotated[str | None, Meta(description="SLURM_JOB_PARTITION")]
    cpus: Annotated[
        int | None,
        Meta(description="SLURM_CPUS_ON_NODE: CPUs allocated to the job step on the node"),
    ]
    gpus: Annotated[
        list[str],
        Meta(
            description="IDs of the GPUs allocated (SLURM_STEP_GPUS, else SLURM_JOB_GPUS); "
            "empty if none"
        ),
    ]


class Environment(_Part):
    """The machine and software a run was measured on."""

    python: str
    packages: dict[str, str]
    platform: str
    hostname: str
    cpu_model: str
    cpu_count: int
    gpus: list[str]
    git_commit: str | None
    config_hash: str
    mabench_version: str
    slurm: Annotated[
        SlurmJob | None,
        Meta(
            description="The Slurm job the run was measured in; null outside Slurm. Absent in "
            "records written before it."
        ),
    ] = None
    cpus_available: Annotated[
        Positive | None,
        Meta(
            description="CPUs the harness process may use: its affinity mask capped by a cgroup "
            f"v2 CPU quota. {_V1_ABSENT}"
        ),
    ] = None


class AgentMetrics(_Part):
    """Per-agent results of one run; null where a phase was not measured."""

    agent: str
    server: str
    solo_wall_s: float | None
    concurrent_wall_s: float | None
    slowdown: float | None
    solo_tps: float | None
    concurrent_tps: float | None
    solo_client_tps: float | None
    concurrent_client_tps: float | None
    solo_ttft_ms: float | None
    concurrent_ttft_ms: float | None
    solo_reloads: Annotated[
        NonNegative | None,
        Meta(
            description="Solo-phase calls that paid a model load (server load_duration > 0). "
            f"{_V1_ABSENT}"
        ),
    ] = None
    concurrent_reloads: Annotated[
        NonNegative | None,
        Meta(description=f"Concurrent-phase calls that paid a model load. {_V1_ABSENT}"),
    ] = None
    solo_reload_s: Annotated[
        NonNegativeSeconds | None,
        Meta(
            description="Sum of the load_duration of the agent's solo-phase calls (s). "
            f"{_V1_ABSENT}"
        ),
    ] = None
    concurrent_reload_s: Annotated[
        NonNegativeSeconds | None,
        Meta(
            description="Sum of the load_duration of the agent's concurrent-phase calls (s). "
            f"{_V1_ABSENT}"
        ),
    ] = None
    sequential_wall_s: Annotated[
        NonNegativeSeconds | None,
        Meta(
            description="The agent's wall time in the sequential phase: alone, with the whole "
            f"machine. {_V2_ABSENT}"
        ),
    ] = None
    sequential_slowdown: Annotated[
        float | None,
        Meta(
            description="concurrent_wall_s / the agent's baseline wall time (sequential_wall_s, "
            f"or solo_wall_s when the solo phase is the baseline). {_V2_ABSENT}"
        ),
    ] = None


class RunMetrics(_Part):
    """The metrics of one run; definitions in mabench.measure.metrics and the README."""

    n_agents: Positive
    concurrent_wall_s: float
    concurrent_sum_s: float
    solo_sum_s: float | None
    seed_speedup: float
    seed_efficiency: float
    true_speedup: Annotated[
        float | None,
        Meta(
            description="The agents' baseline wall times summed (protocol.baseline: the "
            "sequential phase, or the solo phase where every server had the whole machine) / "
            "concurrent_wall_s: how much sooner the agents finished together than one after "
            "another. Null without a baseline. In schema versions 1 and 2, solo_sum_s / "
            "concurrent_wall_s"
        ),
    ]
    true_efficiency: Annotated[float | None, Meta(description="100 * true_speedup / n_agents (%)")]
    coordination_overhead_ms: float
    throughput_delta: float | None
    ttft_delta_ms: float | None
    contention_legacy: bool
    contention_ttft: bool | None
    contention_throughput: bool | None
    agents: list[AgentMetrics]
    solo_reloads: Annotated[
        NonNegative | None,
        Meta(description=f"Solo-phase calls that paid a model load, all agents. {_V1_ABSENT}"),
    ] = None
    concurrent_reloads: Annotated[
        NonNegative | None,
        Meta(
            description=f"Concurrent-phase calls that paid a model load, all agents. {_V1_ABSENT}"
        ),
    ] = None
    solo_reload_s: Annotated[
        NonNegativeSeconds | None,
        Meta(description=f"Sum of the load_duration of the solo-phase calls (s). {_V1_ABSENT}"),
    ] = None
    concurrent_reload_s: Annotated[
        NonNegativeSeconds | None,
        Meta(
            description="Time of the concurrent phase during which some call was loading a "
            f"model: the union of the load intervals (s). {_V1_ABSENT}"
        ),
    ] = None
    true_speedup_excl_load: Annotated[
        float | None,
        Meta(
            description="(solo_sum_s - solo_reload_s) / (concurrent_wall_s - "
            f"concurrent_reload_s). {_V1_ABSENT}"
        ),
    ] = None
    true_efficiency_excl_load: Annotated[
        float | None,
        Meta(description=f"100 * true_speedup_excl_load / n_agents (%). {_V1_ABSENT}"),
    ] = None
    sequential_sum_s: Annotated[
        NonNegativeSeconds | None,
        Meta(
            description="Sum of the agents' wall times in the sequential phase (null without "
            f"one). {_V2_ABSENT}"
        ),
    ] = None
    interference_speedup: Annotated[
        float | None,
        Meta(
            description="solo_sum_s / concurrent_wall_s: each agent alone on the config's own "
            "servers against all together on them, i.e. how much the agents slow each other "
            f"down. {_V2_ABSENT} (there, true_speedup holds it)"
        ),
    ] = None
    interference_efficiency: Annotated[
        float | None,
        Meta(description=f"100 * interference_speedup / n_agents (%). {_V2_ABSENT}"),
    ] = None


_SHA_DOC = Meta(description="sha256 (hex) of the response text")


class WorkComparison(_Part):
    """One call of one agent in both measured phases: did the two do the same work?"""

    agent: str
    call_index: NonNegative
    solo_eval_count: NonNegative | None
    concurrent_eval_count: NonNegative | None
    solo_done_reason: str | None
    concurrent_done_reason: str | None
    solo_text_sha256: Annotated[str, _SHA_DOC]
    concurrent_text_sha256: Annotated[str, _SHA_DOC]
    matched: bool
    compared_text: Annotated[
        bool,
        Meta(
            description="False when the two calls' prompts began with different salts (cache "
            "policy salt): their texts then differ by design, and only eval_count and "
            "done_reason are compared. Absent (true) in records written before."
        ),
    ] = True


class WorkCheck(_Part):
    """Same work in both phases: per (agent, call), eval_count, done_reason and the hash of
    the response text compared. Later calls include earlier answers, so first_divergence
    (agent -> first call index whose phases differ) says where each agent's work parted."""

    matched: bool
    calls: list[WorkComparison]
    first_divergence: dict[str, NonNegative]


class PsModel(_Part):
    """One model a server lists in /api/ps: its name and, where the server says, the context
    it was loaded with (a runner option; null where the server does not say)."""

    name: str
    context_length: NonNegative | None


class IsolationAfter(_Part):
    """What the servers had loaded after the measured phases, against what the agents' loads
    left (step 3): a model or runner configuration that no agent loaded means another client
    or a leftover shared the servers while they were measured."""

    expected: dict[str, list[PsModel]]
    loaded: dict[str, list[PsModel]]
    unexpected: dict[str, list[PsModel]]
    verified: bool


class CacheCheck(_Part):
    """Did every measured phase find the servers' prompt caches in the same state? Per
    (agent, call) the cached prompt tokens each phase's call reported are compared (on
    Ollama's API, which reports no cached count, the prompt tokens it evaluated: fewer when
    part of the prompt was cached)."""

    status: Annotated[
        Literal["equal", "differ", "within", "reset", "unknown"],
        Meta(
            description="equal: the servers reported their cache hits and every phase saw the "
            "same; differ: they did not (the run is flagged cache_differ); within: they did "
            "not, but every server was reset before each phase (and before each agent alone) "
            "and its first call after each reset had nothing cached, so the differences came "
            "from the agents' turns within a phase (not flagged); reset: the servers "
            "said nothing, but every one was brought to the same state before each phase (or "
            "clears its cache per request); unknown: they said nothing and at least one was "
            "not reset (flagged cache_unknown)"
        ),
    ]
    first_difference: Annotated[
        dict[str, NonNegative],
        Meta(description="agent -> first call index whose phases saw different cache hits"),
    ]


class TokenCount(_Part):
    """One call whose server-reported token count is not what it streamed."""

    agent: str
    phase: Phase
    call_index: NonNegative
    reported: Annotated[
        NonNegative, Meta(description="eval_count (usage.completion_tokens, timings.predicted_n)")
    ]
    streamed: Annotated[NonNegative, Meta(description="the text-bearing chunks it streamed")]


class TokenCountCheck(_Part):
    """Each call's reported token count against the text chunks it streamed: equal, or one
    more (the end-of-generation token, which brings no text). Calls whose count the client
    made itself (eval_count_source stream) or whose arrivals were not kept are not compared."""

    matched: bool
    compared: Annotated[NonNegative, Meta(description="calls compared")]
    differing: Annotated[
        list[TokenCount], Meta(description="every compared call whose counts disagree")
    ]


class Validity(_Part):
    """Evidence that a run measured what it claims, checked after its measured phases.

    flags names each check that failed (work_mismatch, ...); a flagged run is recorded
    (on_work_mismatch: flag) and the report counts and lists it."""

    work: WorkCheck
    flags: list[str]
    isolation_after: Annotated[
        IsolationAfter | None,
        Meta(
            description="Models loaded after the measured phases against what the agents' "
            "loads left. Null when not checked."
        ),
    ]
    cache: Annotated[
        CacheCheck | None,
        Meta(description="The same prompt-cache state in every phase. Null when not checked."),
    ] = None
    sequential_work: Annotated[
        WorkCheck | None,
        Meta(
            description="The sequential phase against the concurrent one, compared like work "
            "(its solo_* fields hold the sequential phase). Null without a sequential phase. "
            f"{_V2_ABSENT}"
        ),
    ] = None
    token_counts: Annotated[
        TokenCountCheck | None,
        Meta(
            description="Each call's reported token count against what it streamed (flagged "
            "token_count_differs when they disagree). Null when not checked, and in records "
            "written before."
        ),
    ] = None


class RunRecord(_Part):
    """One run of one config of a study: every call with client and server timings, the
    protocol, topology, isolation evidence, environment and derived metrics. Durations ending
    in _ns are nanoseconds; client times are perf_counter_ns offsets from the run's clock
    origin."""

    study: str
    config_id: str
    scenario: str
    run_index: Positive
    attempt: Positive
    started_at: str
    finished_at: str
    protocol: Protocol
    topology: Topology
    isolation: Isolation
    loads: list[LoadRecord]
    phases: list[Span]
    agent_spans: list[Span]
    calls: list[CallRecord]
    environment: Environment
    metrics: RunMetrics
    schema_version: SchemaVersion
    kind: RecordKind
    validity: Annotated[
        Validity | None,
        Meta(
            description="Checks of the measurement after its phases: same work in both "
            "phases, what was loaded afterwards, and the flags of the checks that failed. "
            "Absent or null in schema version 1."
        ),
    ] = None

    def to_json(self) -> dict[str, Any]:
        """The record as plain JSON values (dicts, lists, strings, numbers), every field."""
        return msgspec.to_builtins(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunRecord:
        """The record in ``data`` (parsed JSON); :class:`RecordError` if it is none."""
        try:
            return msgspec.convert(data, cls)
        except msgspec.ValidationError as exc:
            raise RecordError(_invalid(exc, data)) from None


# ---------------------------------------------------------------------------------------------
# Validation messages, the generated JSON schema, reading and atomic writing
# ---------------------------------------------------------------------------------------------


class RecordError(ValueError):
    """A run record that does not match its Structs (the message names the path in the JSON
    and what is wrong there)."""


#: msgspec's ``... - at `$.calls[3].t_sent_ns``` and the steps of such a path
_AT = re.compile(r"^(?P<what>.*?)(?: - at `(?P<where>\$[^`]*)`)?$", re.DOTALL)
_STEP = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]")


def _invalid(exc: msgspec.ValidationError, data: Any) -> str:
    """``run record invalid at <path>: <what is wrong>``; where msgspec says what it expected
    but not what it found, the value found there (``data``: the parsed record)."""
    m = _AT.match(str(exc))
    assert m is not None  # the pattern matches any text
    where, what = m.group("where") or "$", m.group("what")
    found = _value_at(data, where)
    if what.startswith("Expected") and "got" not in what and _is_scalar(found):
        what = f"{what}, got {json.dumps(found)}"
    return f"run record invalid at {where}: {what}"


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


_MISSING = object()


def _value_at(data: Any, where: str) -> Any:
    """The value at a msgspec path (``$.calls[3].t_sent_ns``) of ``data``; a sentinel that is
    no JSON value where the path does not lead to one (a dict key is written ``[...]``)."""
    rest = where[1:]
    value = data
    while rest:
        step = _STEP.match(rest)
        if step is None:
            return _MISSING
        key = step.group(1) if step.group(1) is not None else int(step.group(2))
        try:
            value = value[key]
        except (KeyError, IndexError, TypeError):
            return _MISSING
        rest = rest[step.end() :]
    return value


@cache
def _decoder() -> msgspec.json.Decoder[RunRecord]:
    return msgspec.json.Decoder(RunRecord)


def parse_record(raw: bytes) -> RunRecord:
    """The run record in ``raw`` (a JSON document), validated while it is decoded;
    :class:`RecordError` saying where and what is wrong when it is no valid run record."""
    try:
        return _decoder().decode(raw)
    except msgspec.ValidationError as exc:
        try:
            data = json.loads(raw)
        except ValueError:
            data = _MISSING
        raise RecordError(_invalid(exc, data)) from None
    except msgspec.DecodeError as exc:
        raise RecordError(f"not valid JSON: {exc}") from None


def validate_record(data: dict[str, Any]) -> None:
    """Raise :class:`RecordError` naming the first invalid path when ``data`` is no run record."""
    RunRecord.from_json(data)


def prepare_reading() -> None:
    """Build the record decoder now (it is made on first use otherwise): worker processes
    forked afterwards inherit it instead of each building its own."""
    _decoder()


def read_record(path: str | os.PathLike[str]) -> RunRecord:
    """The run record in ``path``; :class:`RecordError` naming the file, the path in the JSON
    and what is wrong there when it holds none."""
    raw = Path(path).read_bytes()
    try:
        return parse_record(raw)
    except RecordError as exc:
        raise RecordError(f"{path}: {exc}") from None


class WriteFailed(OSError):
    """A file could not be written (a full disk, a quota, a file size limit): it kept its old
    content or stayed absent, and no partial file was left."""

    def __init__(self, path: Path, exc: OSError) -> None:
        full = exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
        what = "free space there (or raise the quota or file size limit)" if full else "fix it"
        super().__init__(
            exc.errno,
            f"cannot write {path}: {exc.strerror or exc}; the file was left as it was (absent, "
            f"or its previous complete content) and no partial file remains; {what} and run "
            "again",
        )
        self.filename = str(path)

    def __str__(self) -> str:
        return str(self.strerror)


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> None:
    """Write JSON so that ``path`` either keeps its old content or holds the complete new one;
    a failed write (:class:`WriteFailed`) leaves no temporary file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise WriteFailed(path, exc) from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1, sort_keys=False, allow_nan=False)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise WriteFailed(path, exc) from exc
        raise


def write_record(path: str | os.PathLike[str], record: RunRecord) -> None:
    """Write ``record`` atomically, after checking that it reads back (a Struct built in code
    is not validated: its JSON is)."""
    data = record.to_json()
    validate_record(data)
    write_json_atomic(path, data)


@cache
def record_schema() -> dict[str, Any]:
    """The run record's JSON schema (Draft 2020-12), generated from the Structs."""
    generated = msgspec.json.schema(RunRecord)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": SCHEMA_TITLE,
        **generated,
    }


__all__ = [
    "CONCURRENT",
    "PHASES",
    "READABLE_VERSIONS",
    "RECORD_KIND",
    "SCHEMA_VERSION",
    "SEQUENTIAL",
    "SOLO",
    "AgentInfo",
    "AgentMetrics",
    "Baseline",
    "CallRecord",
    "Environment",
    "ErrorInfo",
    "Isolation",
    "IsolationAfter",
    "LoadRecord",
    "Protocol",
    "PsModel",
    "RecordError",
    "RunMetrics",
    "RunRecord",
    "ServerInfo",
    "ServerMetrics",
    "SlurmJob",
    "Span",
    "TokenCount",
    "TokenCountCheck",
    "Topology",
    "Validity",
    "WorkCheck",
    "WorkComparison",
    "WriteFailed",
    "parse_record",
    "prepare_reading",
    "read_record",
    "record_schema",
    "validate_record",
    "write_json_atomic",
    "write_record",
]
