"""The aggregate tables: explicit Arrow schemas for ``runs``, ``agents`` and ``calls``.

Every study (ours, or an imported legacy dataset such as TR110) lands in these three Parquet
files, so the statistics and the report read one shape. Each field carries a description in
its Arrow metadata; ``describe()`` renders them for the README. What a source never measured
(for example TR110's solo phase) is null, never zero.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

_TS = pa.timestamp("us", tz="UTC")


def _f(name: str, type_: pa.DataType, doc: str, nullable: bool = True) -> pa.Field:
    return pa.field(name, type_, nullable=nullable, metadata={"description": doc})


_KEY = [
    _f("study", pa.string(), "study name (results/<study>/)", False),
    _f(
        "source",
        pa.string(),
        "who measured it: 'mabench' or a legacy dataset such as 'tr110'",
        False,
    ),
    _f("config_id", pa.string(), "configuration id, e.g. test001", False),
    _f(
        "scenario",
        pa.string(),
        "scenario, e.g. baseline_vs_chimera, chimera_hetero, chimera_homo",
        False,
    ),
    _f("run_index", pa.int32(), "run number within the config, from 1", False),
]

RUNS_SCHEMA = pa.schema(
    [
        *_KEY,
        _f("attempt", pa.int32(), "Snakemake attempt that produced the record (1 = first try)"),
        _f("started_at", _TS, "run start (UTC)"),
        _f("finished_at", _TS, "run end (UTC)"),
        _f("coordinator", pa.string(), "asyncio or threads"),
        _f("phase_order", pa.string(), "order of the measured phases, e.g. 'solo,concurrent'"),
        _f("topology", pa.string(), "dedicated (one server per agent), shared or mixed"),
        _f("n_agents", pa.int32(), "number of agents"),
        _f("n_servers", pa.int32(), "number of distinct servers the agents used"),
        _f("model", pa.string(), "model name(s), '+'-joined when agents differ"),
        _f("backend", pa.string(), "embedded, ollama or external"),
        _f(
            "api",
            pa.string(),
            "API the agents were measured through: ollama or openai, '+'-joined when the "
            "run's servers differ; null for imported legacy data",
        ),
        _f("concurrent_wall_s", pa.float64(), "wall time of the concurrent phase (s)"),
        _f("concurrent_sum_s", pa.float64(), "sum of agent wall times in the concurrent phase (s)"),
        _f(
            "solo_sum_s",
            pa.float64(),
            "sum of agent wall times in the solo phase (s); null if not measured",
        ),
        _f(
            "seed_speedup",
            pa.float64(),
            "concurrent_sum_s / concurrent_wall_s (the original study's 'speedup')",
        ),
        _f("seed_efficiency", pa.float64(), "100 * seed_speedup / n_agents (%)"),
        _f(
            "true_speedup",
            pa.float64(),
            "the agents' baseline wall times summed / concurrent_wall_s: how much sooner the "
            "agents finished together than one after another, each with the whole machine "
            "(baseline: sequential_sum_s, or solo_sum_s where the solo phase is the baseline); "
            "null without a baseline",
        ),
        _f("true_efficiency", pa.float64(), "100 * true_speedup / n_agents (%)"),
        _f(
            "baseline",
            pa.string(),
            "what true_speedup is measured against: sequential (a phase of its own: each agent "
            "alone on its server with every CPU), solo (the solo phase: every server had the "
            "whole machine) or none",
        ),
        _f("baseline_reason", pa.string(), "why that baseline, in words"),
        _f(
            "sequential_sum_s",
            pa.float64(),
            "sum of agent wall times in the sequential phase (s); null without one",
        ),
        _f(
            "interference_speedup",
            pa.float64(),
            "solo_sum_s / concurrent_wall_s: each agent alone on the config's own servers "
            "against all together there (how much the agents slow each other down)",
        ),
        _f("interference_efficiency", pa.float64(), "100 * interference_speedup / n_agents (%)"),
        _f(
            "true_speedup_excl_load",
            pa.float64(),
            "(solo_sum_s - solo_reload_s) / (concurrent_wall_s - concurrent_reload_s): true "
            "speedup without the model loads paid inside the phases",
        ),
        _f(
            "true_efficiency_excl_load",
            pa.float64(),
            "100 * true_speedup_excl_load / n_agents (%)",
        ),
        _f(
            "solo_reloads",
            pa.int32(),
            "solo-phase calls that paid a model load (server load_duration > 0), all agents",
        ),
        _f(
            "concurrent_reloads",
            pa.int32(),
            "concurrent-phase calls that paid a model load, all agents",
        ),
        _f("solo_reload_s", pa.float64(), "sum of the solo-phase calls' load_duration (s)"),
        _f(
            "concurrent_reload_s",
            pa.float64(),
            "time of the concurrent phase in which some call was loading a model: the union of "
            "the calls' load intervals, each ending where the call's prompt evaluation began (s)",
        ),
        _f(
            "coordination_overhead_ms",
            pa.float64(),
            "concurrent wall minus the longest agent span in it (ms)",
        ),
        _f(
            "throughput_delta",
            pa.float64(),
            "collector minus insight concurrent throughput (tok/s)",
        ),
        _f("ttft_delta_ms", pa.float64(), "collector minus insight concurrent mean TTFT (ms)"),
        _f(
            "contention_legacy",
            pa.bool_(),
            "seed_speedup < legacy threshold (the original code's rule)",
        ),
        _f(
            "contention_ttft",
            pa.bool_(),
            "some agent's concurrent TTFT > its solo TTFT + threshold ms",
        ),
        _f(
            "contention_throughput",
            pa.bool_(),
            "some agent's concurrent tok/s < X % of its solo tok/s",
        ),
        _f(
            "isolation_verified",
            pa.bool_(),
            "every server that has an unload had no model loaded after the forced unload "
            "(servers without one: isolation_unavailable)",
        ),
        _f(
            "isolation_unavailable",
            pa.string(),
            "servers whose API has no unload and no list of loaded models (OpenAI API), so "
            "neither the forced unload nor its check was done there, ';'-joined; empty if none",
        ),
        _f(
            "isolation_after_verified",
            pa.bool_(),
            "after the measured phases every server that lists its loaded models held only "
            "models (and context lengths) the agents' own loads left; null where not checked",
        ),
        _f(
            "work_matched",
            pa.bool_(),
            "every agent's calls generated the same eval_count, done_reason and text (sha256) "
            "in the solo and the concurrent phase; null in records of schema 1",
        ),
        _f(
            "work_diverged",
            pa.string(),
            "where the phases' work parted: each differing agent's first differing call, e.g. "
            "'collector:0;insight:1'; empty when the work matched",
        ),
        _f(
            "validity_flags",
            pa.string(),
            "the checks after the measured phases that failed, ';'-joined (work_mismatch, "
            "...); empty for an unflagged run, null in records of schema 1",
        ),
        _f(
            "cache_state",
            pa.string(),
            "did every measured phase find the servers' prompt caches in the same state? "
            "equal (the servers reported the same cache hits in every phase), differ (they did "
            "not: flagged cache_differ), reset (they said nothing, but every server was reset "
            "before each phase or keeps no cache), unknown (they said nothing and a server was "
            "not reset: flagged cache_unknown); null in older records",
        ),
        _f(
            "token_count_differs",
            pa.int64(),
            "calls whose server-reported token count (eval_count, usage.completion_tokens) is "
            "neither the text chunks they streamed nor one more (the end token): flagged "
            "token_count_differs when above 0; null where not checked (older records)",
        ),
        _f(
            "cache_reset",
            pa.string(),
            "each server's cache policy before every measured phase, e.g. 'a: endpoint; b: "
            "salt' (none, reload, endpoint, salt); null in older records",
        ),
        _f("n_calls", pa.int32(), "LLM calls in the run (both phases)"),
        _f("n_errors", pa.int32(), "calls that failed"),
        _f("hostname", pa.string(), "machine that ran the harness"),
        _f("cpu_model", pa.string(), "CPU model"),
        _f("cpu_count", pa.int32(), "logical CPUs"),
        _f(
            "cpus_available",
            pa.int32(),
            "CPUs the harness process could use: its affinity mask, capped by a cgroup v2 CPU "
            "quota; null in records of schema 1",
        ),
        _f(
            "server_threads",
            pa.string(),
            "llama.cpp threads of each server the run used, e.g. 'a=1;b=1' (embedded; the "
            "CPUs available divided among the config's servers unless backend.num_thread is "
            "set); null where the server decided",
        ),
        _f(
            "server_settings",
            pa.string(),
            "concurrency settings of each server the run used, e.g. 'a: OLLAMA_KEEP_ALIVE=-1, "
            "OLLAMA_NUM_PARALLEL=1; b: ...'; null when none were set or declared",
        ),
        _f(
            "server_settings_source",
            pa.string(),
            "'set' (mabench started the servers with them: ollama) or 'declared' (the config "
            "says so, nothing observed them: external); null without settings",
        ),
        _f("gpus", pa.string(), "GPUs seen by nvidia-smi, ';'-joined; empty if none"),
        _f(
            "slurm_job_id", pa.string(), "SLURM_JOB_ID of the job that measured; null outside Slurm"
        ),
        _f(
            "slurm_node",
            pa.string(),
            "Slurm node that measured (SLURMD_NODENAME); null outside Slurm",
        ),
        _f("slurm_partition", pa.string(), "Slurm partition of the job; null outside Slurm"),
        _f(
            "slurm_cpus",
            pa.int32(),
            "CPUs Slurm allocated to the job step on the node (SLURM_CPUS_ON_NODE); null outside Slurm",
        ),
        _f(
            "slurm_gpus",
            pa.int32(),
            "GPUs Slurm allocated to the job step (SLURM_STEP_GPUS, else SLURM_JOB_GPUS); "
            "null outside Slurm",
        ),
        _f("server_version", pa.string(), "server /api/version answer(s), ';'-joined"),
        _f("mabench_version", pa.string(), "harness version"),
        _f("git_commit", pa.string(), "commit of the harness checkout, if any"),
        _f("config_hash", pa.string(), "sha256 of the resolved config entry"),
        _f("record_path", pa.string(), "run record the row came from"),
    ]
)

AGENTS_SCHEMA = pa.schema(
    [
        *_KEY,
        _f("agent", pa.string(), "agent name, e.g. collector", False),
        _f("workload", pa.string(), "workload (prompt set) the agent ran"),
        _f("server", pa.string(), "server name the agent used"),
        _f("api", pa.string(), "API of the agent's server: ollama or openai"),
        _f("model", pa.string(), "model name"),
        _f("options_json", pa.string(), "the agent's model options as JSON"),
        _f("n_calls", pa.int32(), "calls per phase"),
        _f("solo_wall_s", pa.float64(), "agent wall time alone (s)"),
        _f("concurrent_wall_s", pa.float64(), "agent wall time in the concurrent phase (s)"),
        _f(
            "slowdown",
            pa.float64(),
            "concurrent_wall_s / solo_wall_s: interference, on the config's own servers",
        ),
        _f(
            "sequential_wall_s",
            pa.float64(),
            "agent wall time alone with the whole machine, in the sequential phase (s)",
        ),
        _f(
            "sequential_slowdown",
            pa.float64(),
            "concurrent_wall_s / the agent's baseline wall time (sequential_wall_s, or "
            "solo_wall_s where the solo phase is the baseline): how much later it finished than "
            "alone with the whole machine",
        ),
        _f("solo_tps", pa.float64(), "server eval tok/s alone: sum eval_count / sum eval_duration"),
        _f("concurrent_tps", pa.float64(), "server eval tok/s in the concurrent phase"),
        _f("solo_client_tps", pa.float64(), "client-observed decode tok/s alone"),
        _f("concurrent_client_tps", pa.float64(), "client-observed decode tok/s, concurrent"),
        _f("solo_ttft_ms", pa.float64(), "mean client TTFT of the agent's calls alone (ms)"),
        _f("concurrent_ttft_ms", pa.float64(), "mean client TTFT, concurrent (ms)"),
        _f("solo_load_ms", pa.float64(), "mean server load_duration alone (ms)"),
        _f("concurrent_load_ms", pa.float64(), "mean server load_duration, concurrent (ms)"),
        _f("solo_prompt_eval_ms", pa.float64(), "mean server prompt_eval_duration alone (ms)"),
        _f(
            "concurrent_prompt_eval_ms",
            pa.float64(),
            "mean server prompt_eval_duration, concurrent (ms)",
        ),
        _f("solo_eval_count", pa.int64(), "tokens generated alone"),
        _f("concurrent_eval_count", pa.int64(), "tokens generated, concurrent"),
        _f(
            "solo_reloads",
            pa.int32(),
            "the agent's solo-phase calls that paid a model load (server load_duration > 0)",
        ),
        _f("concurrent_reloads", pa.int32(), "the agent's concurrent-phase calls that paid a load"),
        _f("solo_reload_s", pa.float64(), "sum of load_duration of those solo-phase calls (s)"),
        _f(
            "concurrent_reload_s",
            pa.float64(),
            "sum of load_duration of those concurrent-phase calls (s)",
        ),
    ]
)

CALLS_SCHEMA = pa.schema(
    [
        *_KEY,
        _f("phase", pa.string(), "solo or concurrent", False),
        _f("agent", pa.string(), "agent name", False),
        _f("call_index", pa.int32(), "position of the call in the agent's workload, from 0", False),
        _f("server", pa.string(), "server name"),
        _f("url", pa.string(), "server URL"),
        _f(
            "api",
            pa.string(),
            "API the call went through: ollama (/api/chat, /api/generate) or openai "
            "(/v1/chat/completions)",
        ),
        _f("model", pa.string(), "model name"),
        _f("endpoint", pa.string(), "chat or generate"),
        _f("options_json", pa.string(), "options sent, as JSON"),
        _f("prompt_chars", pa.int32(), "characters of prompt sent"),
        _f("t_sent_s", pa.float64(), "request sent, seconds from the run's clock origin"),
        _f("t_first_token_s", pa.float64(), "first non-empty token received (s from origin)"),
        _f("t_done_s", pa.float64(), "final chunk received (s from origin)"),
        _f("client_ttft_ms", pa.float64(), "first non-empty token minus request sent (ms)"),
        _f("client_wall_ms", pa.float64(), "final chunk minus request sent (ms)"),
        _f(
            "client_decode_tps",
            pa.float64(),
            "(text chunks - 1) / (last token - first token), tok/s; null below two text "
            "chunks apart in time, and in records of schema 1",
        ),
        _f(
            "tpot_ms",
            pa.float64(),
            "time per output token after the first: (client_wall_ms - client_ttft_ms) / "
            "(eval_count - 1) (ms); null below 2 tokens",
        ),
        _f(
            "n_text_chunks",
            pa.int32(),
            "stream chunks that carried text (one per token); null in records of schema 1",
        ),
        _f(
            "itl_ms",
            pa.list_(pa.float64()),
            "inter-token latencies: gaps between consecutive text chunks as received (ms); "
            "null in records of schema 1",
        ),
        _f(
            "itl_mean_ms",
            pa.float64(),
            "mean of itl_ms: (last text chunk - first) / (n_text_chunks - 1) (ms)",
        ),
        _f("itl_max_ms", pa.float64(), "longest gap in itl_ms (ms)"),
        _f("total_ms", pa.float64(), "server total_duration (ms)"),
        _f("load_ms", pa.float64(), "server load_duration (ms)"),
        _f("prompt_eval_count", pa.int64(), "prompt tokens evaluated"),
        _f(
            "cached_prompt_tokens",
            pa.int64(),
            "prompt tokens the server took from its prompt cache, as it reported them "
            "(usage.prompt_tokens_details.cached_tokens or llama.cpp's timings.cache_n); null "
            "where it did not say (Ollama's API, llama-cpp-python's server)",
        ),
        _f("prompt_eval_ms", pa.float64(), "server prompt_eval_duration (ms)"),
        _f("eval_count", pa.int64(), "tokens generated"),
        _f(
            "eval_count_source",
            pa.string(),
            "where eval_count came from: final_metrics (Ollama), usage or timings (OpenAI "
            "API), stream (the client counted the streamed content deltas); null in older "
            "records",
        ),
        _f("eval_ms", pa.float64(), "server eval_duration (ms)"),
        _f("server_tps", pa.float64(), "eval_count / eval_duration (tok/s)"),
        _f("done_reason", pa.string(), "stop, length, or null on error"),
        _f("error_kind", pa.string(), "error class if the call failed"),
        _f("error_message", pa.string(), "error message if the call failed"),
        _f(
            "reconnects",
            pa.int32(),
            "connections the call opened: 0 when it reused its agent's connection; null in "
            "records of schema 1",
        ),
    ]
)

FAILURES_SCHEMA = pa.schema(
    [
        _f("study", pa.string(), "study name"),
        _f("config_id", pa.string(), "config of the failed attempt"),
        _f("run_index", pa.int32(), "run of the failed attempt"),
        _f("attempt", pa.int32(), "attempt number (1 = first try; Snakemake retries add more)"),
        _f("at", _TS, "when it failed (UTC)"),
        _f("cause", pa.string(), "connect, timeout, http, server, protocol, or the error class"),
        _f("error_type", pa.string(), "Python error class"),
        _f(
            "phase",
            pa.string(),
            "protocol step or phase: check, unload, load, solo, concurrent, validity (the "
            "checks after the phases)",
        ),
        _f("agent", pa.string(), "agent whose call failed, if any"),
        _f("server_url", pa.string(), "server involved, if any"),
        _f("message", pa.string(), "error message"),
        _f("report_path", pa.string(), "failure report under results/<study>/failures/"),
    ]
)

SCHEMAS: dict[str, pa.Schema] = {
    "runs": RUNS_SCHEMA,
    "agents": AGENTS_SCHEMA,
    "calls": CALLS_SCHEMA,
    "failures": FAILURES_SCHEMA,
}


def to_table(rows: list[dict], schema: pa.Schema) -> pa.Table:
    """Build a table with exactly ``schema``'s columns; missing keys become null."""
    extra = set().union(*rows) - set(schema.names)
    if extra:
        raise ValueError(f"rows have columns not in the schema: {sorted(extra)}")
    return pa.Table.from_pylist(rows, schema=schema)


def write_table(table: pa.Table, path: str | Path) -> None:
    """Write Parquet atomically (temp file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp, compression="zstd")
    tmp.replace(path)


class TableWriter:
    """One Parquet table written piece by piece, atomically like :func:`write_table`.

    Each :meth:`write` appends its rows (one or more row groups), so a table larger than
    memory never has to be held whole. The file appears under its name only when the ``with``
    block ends without an error; on an error the temporary file is removed.
    """

    def __init__(self, path: str | Path, schema: pa.Schema) -> None:
        self.path = Path(path)
        self.schema = schema
        self._tmp = self.path.with_name(f".{self.path.name}.tmp")
        self._writer: pq.ParquetWriter | None = None

    def __enter__(self) -> TableWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = pq.ParquetWriter(self._tmp, self.schema, compression="zstd")
        return self

    def write(self, table: pa.Table) -> None:
        if self._writer is None:
            raise RuntimeError(f"{self.path}: write() outside the TableWriter's with block")
        if table.num_rows:
            self._writer.write_table(table)

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
        if exc_type is None:
            self._tmp.replace(self.path)
        else:
            self._tmp.unlink(missing_ok=True)


def read_table(path: str | Path, name: str) -> pa.Table:
    """Read a Parquet table and check it has the schema ``SCHEMAS[name]``."""
    table = pq.read_table(path)
    expected = SCHEMAS[name]
    if not table.schema.equals(expected, check_metadata=False):
        raise ValueError(
            f"{path}: schema differs from the {name!r} table schema; regenerate it with the "
            "aggregate rule (snakemake --forcerun aggregate)"
        )
    return table


def describe(name: str) -> str:
    """A Markdown table of one schema's columns (used to keep the README honest)."""
    lines = ["| column | type | description |", "|---|---|---|"]
    for fld in SCHEMAS[name]:
        doc = (fld.metadata or {}).get(b"description", b"").decode()
        lines.append(f"| `{fld.name}` | {fld.type} | {doc} |")
    return "\n".join(lines)


def write_empty_failures(path: str | Path) -> None:
    """A failures table with no rows (imported studies record no attempts)."""
    write_table(to_table([], FAILURES_SCHEMA), path)
