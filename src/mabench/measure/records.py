"""The run record: one JSON document per (study, config, run), versioned and schema-checked.

A run record holds everything measured in one run (every call with client and server
timings), how it was measured (protocol, topology, isolation evidence, environment) and the
metrics derived from it. It is written atomically: a reader never sees half a record, and a
failed run leaves no record that looks complete.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

from mabench.measure.schema_check import compile_check

SCHEMA_VERSION = 2
#: record versions this code reads (a field added since is optional, with a default)
READABLE_VERSIONS = (1, 2)
RECORD_KIND = "mabench.run"

SOLO = "solo"
CONCURRENT = "concurrent"
PHASES = (SOLO, CONCURRENT)


@dataclass(frozen=True)
class ErrorInfo:
    """A failure: what kind, the server's or library's message, where and in which phase."""

    kind: str
    message: str
    url: str | None = None
    phase: str | None = None
    status: int | None = None


@dataclass(frozen=True)
class ServerMetrics:
    """What the server said of one call, in nanoseconds: Ollama's final-chunk metrics
    (api.Metrics), or an OpenAI-compatible server's counts, where a duration the API does not
    give is None, never zero (llama.cpp's ``timings`` give the prompt and eval durations).

    ``eval_count_source`` and ``prompt_eval_count_source`` say where a count came from:
    ``final_metrics`` (Ollama), ``usage`` or ``timings`` (OpenAI API), ``stream`` (the client
    counted the streamed content deltas); None in records written before they were kept.
    """

    total_duration_ns: int | None
    load_duration_ns: int | None
    prompt_eval_count: int | None
    prompt_eval_duration_ns: int | None
    eval_count: int
    eval_duration_ns: int | None
    eval_count_source: str | None = None
    prompt_eval_count_source: str | None = None


@dataclass(frozen=True)
class CallRecord:
    """One LLM call. Client times are ``perf_counter_ns`` offsets from the run's clock origin."""

    phase: str
    agent: str
    call_index: int
    server: str
    url: str
    model: str
    endpoint: str
    options: dict[str, Any]
    prompt_chars: int
    t_sent_ns: int
    t_first_token_ns: int | None
    t_last_token_ns: int | None
    t_done_ns: int
    chunks: int
    server_metrics: ServerMetrics | None
    done_reason: str | None
    response_text: str
    error: ErrorInfo | None = None
    #: arrival of each text-bearing chunk, integer microseconds, delta-encoded: the first from
    #: t_sent, each next from the previous (see :mod:`mabench.measure.arrivals`); None in
    #: records of schema version 1, which kept only the first and last token times
    token_arrivals_us: list[int] | None = None
    #: connections the call opened: 0 when it reused its agent's connection (opened by the
    #: unmeasured warm-up); None in records of schema version 1
    reconnects: int | None = None

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


@dataclass(frozen=True)
class Span:
    """A measured interval on the run's clock: a phase, or one agent within a phase."""

    phase: str
    agent: str | None
    t_start_ns: int
    t_end_ns: int

    @property
    def wall_ns(self) -> int:
        return self.t_end_ns - self.t_start_ns


@dataclass(frozen=True)
class LoadRecord:
    """Step 3 of the protocol: one agent's model loaded with its options, then warmed up.

    The warm-up is one unmeasured one-token call through the run's coordinator, so one-time
    costs (first connection, first decode, interpreter warm-up) do not land on whichever
    measured phase happens to come first.
    """

    agent: str
    server: str
    model: str
    options: dict[str, Any]
    load_duration_ns: int | None  # None: the API reports no load time (OpenAI)
    wall_ns: int
    warmup_wall_ns: int


@dataclass(frozen=True)
class Isolation:
    """Step 2 of the protocol: models loaded on each server before and after the forced unload.

    ``verified``: every server that has an unload had no model loaded after it.
    ``unavailable``: the servers whose API has no unload and no list of loaded models (the
    OpenAI API), so neither the forced unload nor its check could be done there.
    """

    loaded_before: dict[str, list[str]]
    loaded_after: dict[str, list[str]]
    verified: bool
    unavailable: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ServerInfo:
    """A server of the run; ``api``: the API the agents were measured through."""

    name: str
    url: str
    backend: str
    version: str | None = None
    model_digest: str | None = None
    model_size: int | None = None
    api: str = "ollama"
    #: llama.cpp threads the pool started it with (embedded); None: the server decides
    threads: int | None = None
    #: concurrency settings (OLLAMA_NUM_PARALLEL, ...) and whether mabench ``set`` them
    #: (ollama) or the config ``declared`` them (external: not observed); schema 2
    settings: dict[str, str] = field(default_factory=dict)
    settings_source: str | None = None


@dataclass(frozen=True)
class AgentInfo:
    name: str
    workload: str
    server: str
    model: str
    options: dict[str, Any]


@dataclass(frozen=True)
class Topology:
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


@dataclass(frozen=True)
class Protocol:
    coordinator: str
    phase_order: list[str]
    forced_unload: bool
    request_timeout_s: float
    seed: int | None


@dataclass(frozen=True)
class SlurmJob:
    """The Slurm allocation a run was measured in (from the job step's environment)."""

    job_id: str  # SLURM_JOB_ID
    cluster: str | None  # SLURM_CLUSTER_NAME
    node: str  # SLURMD_NODENAME
    partition: str | None  # SLURM_JOB_PARTITION
    cpus: int | None  # SLURM_CPUS_ON_NODE: CPUs allocated to this job step on the node
    gpus: list[str]  # SLURM_STEP_GPUS (else SLURM_JOB_GPUS): IDs of the GPUs allocated


@dataclass(frozen=True)
class Environment:
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
    #: the Slurm job the run was measured in; None outside Slurm and in records written before
    slurm: SlurmJob | None = None
    #: CPUs the harness process may use (affinity, cgroup quota); None in schema version 1
    cpus_available: int | None = None


@dataclass(frozen=True)
class AgentMetrics:
    """Per-agent results of one run. ``None`` where a phase was not measured."""

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
    #: calls that paid a model load (server load_duration > 0) in each phase, and the sum of
    #: their load_duration (s); None in records of schema version 1
    solo_reloads: int | None = None
    concurrent_reloads: int | None = None
    solo_reload_s: float | None = None
    concurrent_reload_s: float | None = None


@dataclass(frozen=True)
class RunMetrics:
    """The metrics of one run; definitions in :mod:`mabench.measure.metrics` and the README."""

    n_agents: int
    concurrent_wall_s: float
    concurrent_sum_s: float
    solo_sum_s: float | None
    seed_speedup: float
    seed_efficiency: float
    true_speedup: float | None
    true_efficiency: float | None
    coordination_overhead_ms: float
    throughput_delta: float | None
    ttft_delta_ms: float | None
    contention_legacy: bool
    contention_ttft: bool | None
    contention_throughput: bool | None
    agents: list[AgentMetrics]
    #: reloads inside the measured phases (see :mod:`mabench.measure.metrics`); None in
    #: records of schema version 1
    solo_reloads: int | None = None
    concurrent_reloads: int | None = None
    solo_reload_s: float | None = None
    concurrent_reload_s: float | None = None
    true_speedup_excl_load: float | None = None
    true_efficiency_excl_load: float | None = None


@dataclass(frozen=True)
class WorkComparison:
    """One call of one agent in both measured phases: did the two do the same work?"""

    agent: str
    call_index: int
    solo_eval_count: int | None
    concurrent_eval_count: int | None
    solo_done_reason: str | None
    concurrent_done_reason: str | None
    solo_text_sha256: str
    concurrent_text_sha256: str
    matched: bool


@dataclass(frozen=True)
class WorkCheck:
    """Same work in both phases: per (agent, call), eval_count, done_reason and the hash of
    the response text compared. Later calls include earlier answers, so ``first_divergence``
    (agent -> first call index whose phases differ) says where each agent's work parted."""

    matched: bool
    calls: list[WorkComparison]
    first_divergence: dict[str, int]


@dataclass(frozen=True)
class PsModel:
    """One model a server lists in ``/api/ps``: its name and, where the server says, the
    context it was loaded with (a runner option)."""

    name: str
    context_length: int | None = None


@dataclass(frozen=True)
class IsolationAfter:
    """What the servers had loaded after the measured phases, against what the agents' loads
    left (step 3): a model or runner configuration that no agent loaded means another client
    or a leftover shared the servers while they were measured."""

    expected: dict[str, list[PsModel]]
    loaded: dict[str, list[PsModel]]
    unexpected: dict[str, list[PsModel]]
    verified: bool


@dataclass(frozen=True)
class Validity:
    """Evidence that a run measured what it claims, checked after its measured phases.

    ``flags`` names each check that failed (``work_mismatch``, ...); a flagged run is
    recorded (``on_work_mismatch: flag``) and the report counts and lists it."""

    work: WorkCheck
    flags: list[str] = field(default_factory=list)
    isolation_after: IsolationAfter | None = None


@dataclass(frozen=True)
class RunRecord:
    study: str
    config_id: str
    scenario: str
    run_index: int
    attempt: int
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
    schema_version: int = SCHEMA_VERSION
    kind: str = RECORD_KIND
    #: checks of the measurement (same work in both phases, ...); None in schema version 1
    validity: Validity | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunRecord:
        validate_record(data)
        return _build(cls, data)


# ---------------------------------------------------------------------------------------------
# JSON schema, reading and atomic writing
# ---------------------------------------------------------------------------------------------


class RecordError(ValueError):
    """A run record that does not match the schema (the message names the path in the JSON)."""


@cache
def record_schema() -> dict[str, Any]:
    text = resources.files("mabench").joinpath("schemas/run_record.schema.json").read_text()
    return json.loads(text)


@cache
def _fast_check() -> Callable[[Any], bool]:
    """The record schema compiled once per process into a conservative acceptance check
    (:mod:`mabench.measure.schema_check`): ~40 µs per record instead of ~6 ms with ``jsonschema``."""
    return compile_check(record_schema())


@cache
def _reference_validator() -> Any:
    # Lazy: a valid record never needs jsonschema (~55 ms to import), and a run job, which
    # writes one valid record, should not pay for it.
    import jsonschema

    return jsonschema.Draft202012Validator(record_schema())


def validate_record(data: dict[str, Any]) -> None:
    """Raise :class:`RecordError` naming the first invalid path when ``data`` is no run record.

    A valid record costs one call of the compiled check. Whenever that does not accept the
    record, the reference validator (``jsonschema``, Draft 2020-12) decides, and its first
    error by path gives the message, so verdict and message are the reference validator's
    however the record was checked.
    """
    if _fast_check()(data):
        return
    errors = sorted(_reference_validator().iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        where = "/".join(str(p) for p in err.absolute_path) or "(root)"
        raise RecordError(f"run record invalid at {where}: {err.message}")


def prepare_reading() -> None:
    """Compile the record check, the reference validator and the dataclass builders now
    (they are made on first use otherwise): worker processes forked afterwards inherit them
    instead of each making its own."""
    _fast_check()
    _reference_validator()
    _builder(RunRecord)


def read_record(path: str | os.PathLike[str]) -> RunRecord:
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    try:
        return RunRecord.from_json(data)
    except RecordError as exc:
        raise RecordError(f"{path}: {exc}") from None


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> None:
    """Write JSON so that ``path`` either keeps its old content or holds the complete new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1, sort_keys=False, allow_nan=False)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_record(path: str | os.PathLike[str], record: RunRecord) -> None:
    data = record.to_json()
    validate_record(data)
    write_json_atomic(path, data)


def _build(tp: Any, value: Any) -> Any:
    """Rebuild nested dataclasses from plain JSON (the inverse of ``asdict``)."""
    return _builder(tp)(value)


def _keep(value: Any) -> Any:
    return value


@cache
def _builder(tp: Any) -> Callable[[Any], Any]:
    """The function that rebuilds a ``tp`` from its JSON, derived from the type hints once per
    type (``typing.get_type_hints`` per record cost ~4 ms). JSON values that need no rebuilding
    (numbers, strings, lists and dicts of them) are kept as they are."""
    origin = get_origin(tp)
    if origin is list:
        item = _builder(get_args(tp)[0])
        if item is _keep:
            return _keep
        return lambda v: None if v is None else [item(x) for x in v]
    if origin is dict:
        item = _builder(get_args(tp)[1])
        if item is _keep:
            return _keep
        return lambda v: None if v is None else {k: item(x) for k, x in v.items()}
    args = [a for a in get_args(tp) if a is not type(None)]
    if args and origin is not None and len(args) == 1:  # Optional[X]
        return _builder(args[0])
    if is_dataclass(tp):
        return _dataclass_builder(tp)
    return _keep


def _dataclass_builder(tp: type) -> Callable[[Any], Any]:
    """Rebuild a ``tp`` from a JSON object.

    A JSON object holding exactly ``tp``'s fields (every schema-valid record's) becomes an
    instance the way ``pickle`` restores one: a new object whose ``__dict__`` receives the
    fields, with no call of the frozen ``__init__`` (whose ``object.__setattr__`` per field
    was ~75 % of the time to rebuild a record). The instance is the one ``__init__`` would
    make: same attributes, values, equality and hash. Any other object (missing fields that
    have defaults, keys that are no field), and a dataclass whose ``__init__`` does more than
    set its fields, goes through ``__init__``.
    """
    hints = get_type_hints(tp)
    names = frozenset(f.name for f in fields(tp))
    nested = [(f.name, b) for f in fields(tp) if (b := _builder(hints[f.name])) is not _keep]
    plain_init = (
        not hasattr(tp, "__post_init__")
        and "__slots__" not in vars(tp)
        and all(f.init for f in fields(tp))
    )
    new = object.__new__

    def build(value: Any) -> Any:
        if value is None:
            return None
        if plain_init and value.keys() == names:
            obj = new(tp)
            attrs = obj.__dict__
            attrs.update(value)
            for name, b in nested:
                attrs[name] = b(attrs[name])
            return obj
        # keys that are no field (not in a schema-valid record) are left out
        kwargs = {k: v for k, v in value.items() if k in names}
        for name, b in nested:
            if name in kwargs:
                kwargs[name] = b(kwargs[name])
        return tp(**kwargs)

    return build


__all__ = [
    "CONCURRENT",
    "PHASES",
    "READABLE_VERSIONS",
    "SCHEMA_VERSION",
    "SOLO",
    "AgentInfo",
    "AgentMetrics",
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
    "Topology",
    "Validity",
    "WorkCheck",
    "WorkComparison",
    "prepare_reading",
    "read_record",
    "validate_record",
    "write_json_atomic",
    "write_record",
]
