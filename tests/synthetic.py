"""A synthetic "full" study that follows the table schemas: solo and concurrent phases,
per-call timings, three scenarios, a shared-vs-dedicated topology variant, 5 runs, 2 agents.

Numbers are generated from a seeded RNG and the metric definitions (so they are internally
consistent: speedups come from the agent spans, flags from the thresholds). ``evil`` puts a
hostile string into data fields that reach the report (options, CPU model, an error message).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from mabench.analysis.tables import AGENTS_SCHEMA, CALLS_SCHEMA, RUNS_SCHEMA, to_table, write_table

EVIL = "| <script>alert(1)</script> **x** [link](http://e.vil) `code` # _u_\nnext"

#: config id -> (scenario, topology, collector options, insight options)
CONFIGS: dict[str, tuple[str, str, dict, dict]] = {
    "test001": ("baseline_vs_chimera", "dedicated", {}, {"num_ctx": 512, "temperature": 0.8}),
    "test004": ("baseline_vs_chimera", "dedicated", {}, {"num_ctx": 1024, "temperature": 0.8}),
    "test007": ("chimera_hetero", "dedicated", {"num_ctx": 512}, {"num_ctx": 1024}),
    "test011": ("chimera_hetero", "dedicated", {"num_ctx": 512}, {"num_ctx": 2048}),
    "test108": ("chimera_homo", "dedicated", {"num_ctx": 2048}, {"num_ctx": 2048}),
    "test108s": ("chimera_homo", "shared", {"num_ctx": 2048}, {"num_ctx": 2048}),
}
AGENTS = ("collector", "insight")
CALLS_PER_AGENT = 2
RUNS = 5
RELOAD_S = 0.3  # one model load on a shared server with two runner configs


def _token_gaps(rng: np.random.Generator, tokens: int, eval_ms: float) -> dict:
    """Inter-token gaps around eval_ms / (tokens - 1), with a few long stalls."""
    base = eval_ms / (tokens - 1)
    gaps = base * rng.lognormal(0.0, 0.3, tokens - 1)
    gaps[rng.random(tokens - 1) < 0.03] *= 6
    return {
        "tpot_ms": eval_ms / (tokens - 1),
        "n_text_chunks": tokens,
        "itl_ms": [float(g) for g in gaps],
        "itl_mean_ms": float(gaps.mean()),
        "itl_max_ms": float(gaps.max()),
    }


def build(seed: int = 7, evil: bool = False, runs: int = RUNS) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    gap_rng = np.random.default_rng(seed + 1000)  # token gaps: their own stream of numbers
    run_rows, agent_rows, call_rows = [], [], []
    t_origin = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    for ci, (cid, (scenario, topology, opt_c, opt_i)) in enumerate(CONFIGS.items()):
        options = {"collector": dict(opt_c), "insight": dict(opt_i)}
        if evil and cid == "test004":
            options["insight"]["system"] = EVIL
        for run_index in range(1, runs + 1):
            key = {
                "study": "synthetic",
                "source": "mabench",
                "config_id": cid,
                "scenario": scenario,
                "run_index": run_index,
            }
            # contention factor: shared servers serialise, dedicated ones only share the CPU
            factor = (1.8 if topology == "shared" else 1.15) + 0.05 * ci + rng.normal(0, 0.05)
            solo_walls, conc_walls, per_agent = {}, {}, {}
            t = 0.0
            for agent in AGENTS:  # solo phase: agents one after another
                start = t
                calls = []
                for k in range(CALLS_PER_AGENT):
                    load = float(rng.uniform(5, 20)) if k else float(rng.uniform(200, 400))
                    prefill = float(rng.uniform(80, 160))
                    rest = float(rng.uniform(5, 15))
                    ttft = load + prefill + rest
                    tokens = 40
                    eval_ms = tokens / float(rng.uniform(38, 42)) * 1000
                    calls.append(("solo", agent, k, t, ttft, eval_ms, load, prefill, tokens))
                    t += (ttft + eval_ms) / 1000 + 0.001
                solo_walls[agent] = t - start
                per_agent[agent] = {"solo": calls}
            conc_start = t + 0.5
            for j, agent in enumerate(AGENTS):  # concurrent phase: both at once
                a_factor = factor * (1 + 0.03 * j)
                tc = conc_start + 0.0005 * j
                calls = []
                for _, _, k, _, _ttft, eval_ms, load, prefill, tokens in per_agent[agent]["solo"]:
                    ttft_c = load + prefill * a_factor + 10.0 * a_factor
                    eval_c = eval_ms * a_factor
                    calls.append(
                        (
                            "concurrent",
                            agent,
                            k,
                            tc,
                            ttft_c,
                            eval_c,
                            load,
                            prefill * a_factor,
                            tokens,
                        )
                    )
                    tc += (ttft_c + eval_c) / 1000 + 0.001
                conc_walls[agent] = tc - (conc_start + 0.0005 * j)
                per_agent[agent]["concurrent"] = calls
            longest = max(conc_walls.values())
            wall = longest + 0.002
            conc_sum = sum(conc_walls.values())
            solo_sum = sum(solo_walls.values())
            seed_speedup = conc_sum / wall
            true_speedup = solo_sum / wall
            # a shared server with two runner configs reloads 2x alone, 4x concurrently
            reloads = (2, 4) if topology == "shared" else (0, 0)
            reload_s = (reloads[0] * RELOAD_S, reloads[1] * RELOAD_S)
            excl_speedup = (solo_sum - reload_s[0]) / (wall - reload_s[1])
            work_matched = not (cid == "test004" and run_index == 2)
            stats_by_agent = {}
            for agent in AGENTS:
                row = {
                    **key,
                    "agent": agent,
                    "workload": agent,
                    "server": "a" if topology == "shared" or agent == "collector" else "b",
                    "model": "smollm2:135m",
                    "options_json": json.dumps(options[agent], sort_keys=True),
                    "n_calls": CALLS_PER_AGENT,
                }
                for phase in ("solo", "concurrent"):
                    cs = per_agent[agent][phase]
                    tok = sum(c[8] for c in cs)
                    eval_s = sum(c[5] for c in cs) / 1000
                    row[f"{phase}_wall_s"] = (
                        solo_walls[agent] if phase == "solo" else conc_walls[agent]
                    )
                    row[f"{phase}_tps"] = tok / eval_s
                    row[f"{phase}_client_tps"] = (tok - len(cs)) / eval_s
                    row[f"{phase}_ttft_ms"] = float(np.mean([c[4] for c in cs]))
                    row[f"{phase}_load_ms"] = float(np.mean([c[6] for c in cs]))
                    row[f"{phase}_prompt_eval_ms"] = float(np.mean([c[7] for c in cs]))
                    row[f"{phase}_eval_count"] = tok
                    for phase_, agent_, k, t_sent, ttft, eval_ms, load, prefill, tokens in cs:
                        err = evil and cid == "test004" and run_index == 1 and k == 1
                        call_rows.append(
                            {
                                **key,
                                "phase": phase_,
                                "agent": agent_,
                                "call_index": k,
                                "server": row["server"],
                                "url": "http://127.0.0.1:1",
                                "model": "smollm2:135m",
                                "endpoint": "chat",
                                "options_json": row["options_json"],
                                "prompt_chars": 900,
                                "t_sent_s": t_sent,
                                "t_first_token_s": t_sent + ttft / 1000,
                                "t_done_s": t_sent + (ttft + eval_ms) / 1000,
                                "client_ttft_ms": ttft,
                                "client_wall_ms": ttft + eval_ms,
                                "client_decode_tps": (tokens - 1) / (eval_ms / 1000),
                                **_token_gaps(gap_rng, tokens, eval_ms),
                                "total_ms": ttft + eval_ms,
                                "load_ms": load,
                                "prompt_eval_count": 200,
                                "prompt_eval_ms": prefill,
                                "eval_count": tokens,
                                "eval_ms": eval_ms,
                                "server_tps": tokens / (eval_ms / 1000),
                                "done_reason": "length",
                                "error_kind": "http" if err else None,
                                "error_message": EVIL if err else None,
                            }
                        )
                row["slowdown"] = row["concurrent_wall_s"] / row["solo_wall_s"]
                stats_by_agent[agent] = row
                agent_rows.append(row)
            col, ins = stats_by_agent["collector"], stats_by_agent["insight"]
            ttft_flag = any(
                r["concurrent_ttft_ms"] > r["solo_ttft_ms"] + 3000 for r in stats_by_agent.values()
            )
            tput_flag = any(
                r["concurrent_tps"] < 0.7 * r["solo_tps"] for r in stats_by_agent.values()
            )
            started = t_origin + timedelta(minutes=10 * ci + run_index)
            run_rows.append(
                {
                    **key,
                    "attempt": 1,
                    "started_at": started,
                    "finished_at": started + timedelta(seconds=conc_start + wall),
                    "coordinator": "asyncio",
                    "phase_order": "solo,concurrent" if run_index % 2 else "concurrent,solo",
                    "topology": topology,
                    "n_agents": 2,
                    "n_servers": 1 if topology == "shared" else 2,
                    "model": "smollm2:135m",
                    "backend": "embedded",
                    "concurrent_wall_s": wall,
                    "concurrent_sum_s": conc_sum,
                    "solo_sum_s": solo_sum,
                    "seed_speedup": seed_speedup,
                    "seed_efficiency": 100 * seed_speedup / 2,
                    "true_speedup": true_speedup,
                    "true_efficiency": 100 * true_speedup / 2,
                    "baseline": "solo",
                    "baseline_reason": "every server has the whole machine (synthetic)",
                    "sequential_sum_s": None,
                    "interference_speedup": true_speedup,
                    "interference_efficiency": 100 * true_speedup / 2,
                    "true_speedup_excl_load": excl_speedup,
                    "true_efficiency_excl_load": 100 * excl_speedup / 2,
                    "solo_reloads": reloads[0],
                    "concurrent_reloads": reloads[1],
                    "solo_reload_s": reload_s[0],
                    "concurrent_reload_s": reload_s[1],
                    "coordination_overhead_ms": (wall - longest) * 1000,
                    "throughput_delta": col["concurrent_tps"] - ins["concurrent_tps"],
                    "ttft_delta_ms": col["concurrent_ttft_ms"] - ins["concurrent_ttft_ms"],
                    "contention_legacy": seed_speedup < 1.5,
                    "contention_ttft": ttft_flag,
                    "contention_throughput": tput_flag,
                    "isolation_verified": True,
                    "isolation_after_verified": True,
                    "work_matched": work_matched,
                    "work_diverged": "" if work_matched else "insight:1",
                    "validity_flags": "" if work_matched else "work_mismatch",
                    "n_calls": 4 * CALLS_PER_AGENT,
                    "n_errors": 0,
                    "hostname": "bench-1",
                    "cpu_model": EVIL if evil else "Synthetic CPU 9000",
                    "cpu_count": 2,
                    "cpus_available": 2,
                    "server_threads": "a=2" if topology == "shared" else "a=1;b=1",
                    "gpus": "",
                    "server_version": "0.0.0-embedded",
                    "mabench_version": "0.1.0",
                    "git_commit": "abc1234",
                    "config_hash": f"hash-{cid}",
                    "record_path": f"results/synthetic/runs/{cid}/run_{run_index}.json",
                }
            )
    return {
        "runs": to_table(run_rows, RUNS_SCHEMA).to_pandas(),
        "agents": to_table(agent_rows, AGENTS_SCHEMA).to_pandas(),
        "calls": to_table(call_rows, CALLS_SCHEMA).to_pandas(),
    }


def write(out_dir: Path, **kw) -> dict[str, Path]:
    """Write the synthetic tables as Parquet (schema-typed) and return their paths."""
    frames = build(**kw)
    schemas = {"runs": RUNS_SCHEMA, "agents": AGENTS_SCHEMA, "calls": CALLS_SCHEMA}
    paths = {}
    for name, df in frames.items():
        rows = df.astype(object).where(df.notna(), None).to_dict("records")
        paths[name] = Path(out_dir) / f"{name}.parquet"
        write_table(to_table(rows, schemas[name]), paths[name])
    return paths
