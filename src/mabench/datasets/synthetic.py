"""Synthetic but schema-valid run records: a dataset for the analysis-scale benchmark and
the tests of everything that reads run records.

Record ``i`` of a study of any size is always the same (its RNG is seeded with ``(seed, i)``),
so the 1k and 10k studies are prefixes of the 100k one and the files are generated once and
cached in the folder the caller names (the benchmarks: ``benchmarks/.work/records``; tests: a
temporary folder).

Shape (a large TR114-like matrix): 100 configs over the three TR114 scenarios, both
coordinators, dedicated and (every fifth config) shared topology, two agents with two calls
each per phase, 40 tokens per call; run ``i`` is config ``i % 100``, run index ``i // 100 + 1``
(so 1k runs = 100 configs x 10 runs, 100k = 100 x 1000). Timings come from a seeded RNG with
contention between the agents; the metrics are computed by ``mabench.measure.metrics`` from the
calls and spans, exactly as a real run's are. Built with the dataclasses of
``mabench.measure.records`` and written as ``write_json_atomic`` formats them (indent 1).
"""

from __future__ import annotations

import json
import logging
import os
import random
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec

from mabench.measure.metrics import compute_run_metrics
from mabench.measure.records import (
    RECORD_KIND,
    SCHEMA_VERSION,
    AgentInfo,
    Baseline,
    CallRecord,
    Environment,
    Isolation,
    IsolationAfter,
    LoadRecord,
    Protocol,
    PsModel,
    RunRecord,
    ServerInfo,
    ServerMetrics,
    Span,
    Topology,
    Validity,
    WorkCheck,
    validate_record,
)

GENERATOR_VERSION = 1
SEED = 20260105
N_CONFIGS = 100
SCENARIOS = ("baseline_vs_chimera", "chimera_hetero", "chimera_homo")
T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
TEXT = "".join(f"tok{k} " for k in range(40))

log = logging.getLogger(__name__)
#: a work check that found the two phases alike (a synthetic run's calls do the same work)
SAME_WORK = WorkCheck(matched=True, calls=[], first_divergence={})

#: The synthetic servers are independent processes: the solo phase is the baseline.
SYNTHETIC_BASELINE = Baseline(
    kind="solo",
    threads=None,
    reason="every server has the whole machine (synthetic), so the solo phase is the baseline",
)


def _config(ci: int) -> dict:
    scenario = SCENARIOS[ci % 3]
    shared = ci % 5 == 4
    num_ctx = (512, 1024, 2048)[(ci // 3) % 3]
    temp = (0.6, 0.8, 1.0)[(ci // 9) % 3]
    chimera = {"num_gpu": 80, "num_ctx": num_ctx, "temperature": temp, "top_p": 0.9, "top_k": 40}
    if scenario == "baseline_vs_chimera":
        options = {"collector": {}, "insight": chimera}
    elif scenario == "chimera_hetero":
        options = {"collector": chimera, "insight": {**chimera, "num_ctx": 2048}}
    else:
        options = {"collector": chimera, "insight": dict(chimera)}
    return {
        "id": f"cfg{ci:03d}",
        "scenario": scenario,
        "coordinator": "asyncio" if (ci // 2) % 2 == 0 else "threads",
        "servers": {"collector": "a", "insight": "a" if shared else "b"},
        "shared": shared,
        "options": options,
    }


def make_record(i: int, seed: int = SEED) -> RunRecord:
    """The run record number ``i``."""
    rng = random.Random(seed * 1_000_003 + i)
    ci, run_index = i % N_CONFIGS, i // N_CONFIGS + 1
    cfg = _config(ci)
    urls = {"a": "http://127.0.0.1:11501", "b": "http://127.0.0.1:11502"}
    agents = [
        AgentInfo(
            name=name,
            workload=name,
            server=cfg["servers"][name],
            model="smollm2:135m",
            options={**cfg["options"][name], "seed": 42},
        )
        for name in ("collector", "insight")
    ]
    order = ["solo", "concurrent"] if run_index % 2 else ["concurrent", "solo"]
    contention = (1.9 if cfg["shared"] else 1.12) + 0.002 * ci + rng.gauss(0, 0.04)
    ms = 1_000_000
    calls, spans, phases = [], [], []
    t = 500 * ms
    for phase in order:
        phase_start = t
        if phase == "solo":
            cursor = t
        ends: dict[str, int] = {}
        for j, a in enumerate(agents):
            tc = cursor if phase == "solo" else t + j * 300_000
            agent_start = tc
            factor = 1.0 if phase == "solo" else contention * (1 + 0.03 * j)
            for k in range(2):
                prefill = rng.uniform(80, 160) * ms * (1 if phase == "solo" else factor)
                ttft = int(prefill + rng.uniform(5, 15) * ms)
                eval_ns = int(40 / rng.uniform(38, 42) * 1e9 * factor)
                t_sent = int(tc)
                t_first = t_sent + ttft
                t_last = t_first + int(eval_ns * 39 / 40)
                t_done = t_last + int(rng.uniform(0.2, 1.0) * ms)
                calls.append(
                    CallRecord(
                        phase=phase,
                        agent=a.name,
                        call_index=k,
                        server=a.server,
                        url=urls[a.server],
                        model=a.model,
                        endpoint="chat",
                        options={**a.options, "num_predict": 40},
                        prompt_chars=600 + 40 * k + j,
                        t_sent_ns=t_sent,
                        t_first_token_ns=t_first,
                        t_last_token_ns=t_last,
                        t_done_ns=t_done,
                        chunks=41,
                        server_metrics=ServerMetrics(
                            total_duration_ns=t_done - t_sent - int(0.5 * ms),
                            load_duration_ns=0,
                            prompt_eval_count=110 + 10 * k,
                            prompt_eval_duration_ns=int(prefill),
                            eval_count=40,
                            eval_duration_ns=eval_ns,
                        ),
                        done_reason="length",
                        response_text=TEXT,
                    )
                )
                tc = t_done + int(0.3 * ms)
            ends[a.name] = int(tc)
            spans.append(Span(phase, a.name, int(agent_start), int(tc)))
            if phase == "solo":
                cursor = tc
        phase_end = max(ends.values()) + int(rng.uniform(0.1, 2.0) * ms)
        phases.append(Span(phase, None, int(phase_start), int(phase_end)))
        t = phase_end + 5 * ms
    metrics = compute_run_metrics(agents, calls, phases, spans)
    started = T0 + timedelta(seconds=20 * i)
    servers = sorted({a.server for a in agents})
    return RunRecord(
        study="scale",
        config_id=cfg["id"],
        scenario=cfg["scenario"],
        run_index=run_index,
        attempt=1 if rng.random() > 0.01 else 2,
        started_at=started.isoformat(timespec="microseconds"),
        finished_at=(started + timedelta(seconds=15)).isoformat(timespec="microseconds"),
        protocol=Protocol(
            coordinator=cfg["coordinator"],
            phase_order=order,
            forced_unload=True,
            request_timeout_s=300.0,
            seed=42,
            baseline=SYNTHETIC_BASELINE,
        ),
        topology=Topology(
            servers=[
                ServerInfo(
                    name=s,
                    url=urls[s],
                    backend="embedded",
                    version="0.1.0",
                    model_digest="0" * 64,
                    model_size=98_000_000,
                )
                for s in servers
            ],
            agents=agents,
        ),
        isolation=Isolation(
            loaded_before={s: [] for s in servers},
            loaded_after={s: [] for s in servers},
            verified=True,
        ),
        loads=[
            LoadRecord(
                agent=a.name,
                server=a.server,
                model=a.model,
                options=a.options,
                load_duration_ns=int(rng.uniform(150, 400) * ms),
                wall_ns=int(rng.uniform(160, 420) * ms),
                warmup_wall_ns=int(rng.uniform(40, 90) * ms),
            )
            for a in agents
        ],
        phases=phases,
        agent_spans=spans,
        calls=calls,
        environment=Environment(
            python="3.11.7",
            packages={"httpx": "0.28.1", "numpy": "2.4.6", "pyarrow": "26.0.1"},
            platform="Linux-6.18-x86_64-with-glibc2.36",
            hostname="bench",
            cpu_model="Intel(R) Xeon(R) Processor",
            cpu_count=2,
            gpus=[],
            git_commit="0" * 40,
            config_hash=f"{ci:064x}",
            mabench_version="0.1.0",
        ),
        metrics=metrics,
        schema_version=SCHEMA_VERSION,
        kind=RECORD_KIND,
    )


def record_path(root: Path, i: int) -> Path:
    return root / "runs" / f"cfg{i % N_CONFIGS:03d}" / f"run_{i // N_CONFIGS + 1}.json"


def with_nulls(record: RunRecord) -> RunRecord:
    """``record`` as servers that say less leave it: its nullable bounded fields null.

    Its calls have OpenAI-style server metrics (a count, no durations: the client counted the
    streamed deltas) and no arrivals or reconnects, so the metrics derived from them are null
    where they need those; its servers have no thread count, its machine no CPU quota; and
    what its servers held after the measured phases has no context length (an older Ollama
    whose /api/ps has no ``context_length``); its work check found both phases alike."""
    replace = msgspec.structs.replace
    metrics = ServerMetrics(
        total_duration_ns=None,
        load_duration_ns=None,
        prompt_eval_count=None,
        prompt_eval_duration_ns=None,
        eval_count=40,
        eval_duration_ns=None,
        eval_count_source="stream",
        prompt_eval_count_source=None,
    )
    calls = [
        replace(c, server_metrics=metrics, token_arrivals_us=None, reconnects=None)
        for c in record.calls
    ]
    held = {a.server: [PsModel(name=a.model, context_length=None)] for a in record.topology.agents}
    after = IsolationAfter(expected=held, loaded=held, unexpected={}, verified=True)
    servers = [replace(s, threads=None) for s in record.topology.servers]
    return replace(
        record,
        calls=calls,
        topology=replace(record.topology, servers=servers),
        environment=replace(record.environment, cpus_available=None),
        metrics=compute_run_metrics(
            record.topology.agents, calls, record.phases, record.agent_spans
        ),
        validity=Validity(work=SAME_WORK, flags=[], isolation_after=after),
    )


def _write_range(args: tuple[str, int, int]) -> int:
    root, lo, hi = Path(args[0]), args[1], args[2]
    for i in range(lo, hi):
        data = make_record(i).to_json()
        if i == lo:
            validate_record(data)  # one full schema check per chunk
        path = record_path(root, i)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1, allow_nan=False)
            fh.write("\n")
    return hi - lo


def ensure_records(n: int, root: Path) -> list[Path]:
    """Paths of records 0..n-1 under ``root``, generating the missing ones (``root`` is the
    cache: what an earlier call generated there with this generator's version and seed is
    kept)."""
    stamp = root / "generated.json"
    meta = json.loads(stamp.read_text()) if stamp.exists() else {}
    if meta.get("version") != GENERATOR_VERSION or meta.get("seed") != SEED:
        meta = {"version": GENERATOR_VERSION, "seed": SEED, "count": 0}
    have = int(meta.get("count", 0))
    if have < n:
        log.info("generating synthetic run records %d..%d in %s", have, n - 1, root)
        step = 2000
        chunks = [(str(root), lo, min(lo + step, n)) for lo in range(have, n, step)]
        workers = max(1, min(os.cpu_count() or 1, 4))
        with ProcessPoolExecutor(workers) as pool:
            for done, _ in enumerate(pool.map(_write_range, chunks), 1):
                if done % 10 == 0:
                    log.info("  %d / %d", min(have + done * step, n), n)
        root.mkdir(parents=True, exist_ok=True)
        stamp.write_text(json.dumps({**meta, "count": n}))
    return [record_path(root, i) for i in range(n)]
