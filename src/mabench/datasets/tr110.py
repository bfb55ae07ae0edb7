"""``mabench import-tr110``: the TR110 result layout -> our ``runs``/``agents``/``calls`` tables.

TR110 (the original Python dual-Ollama study) wrote one ``metrics.json`` per run and one
``summary.json`` per config under ``phase_<P>_test_<NNN>/``. It timed both agents *while they
ran at once* and never ran them alone, so everything about a solo phase (solo wall, true
speedup, slowdown, the TTFT and throughput contention rules) stays null here. It recorded no
per-call data either: the ``calls`` table is empty.

Two conventions of the source are corrected on import (and reported by :func:`reanalyse`):

- ``throughput_delta``: TR110 stored ``chimera_throughput - baseline_throughput`` (insight
  minus collector), the opposite of its report's formula; we store collector minus insight.
- The speedup and efficiency are recomputed from the two agent durations and the wall time
  (they equal TR110's stored values to float precision).

In TR110's files "baseline" always means the collector agent (on :11434) and "chimera" the
insight agent (on :11435), whatever options each ran.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mabench.analysis.tables import AGENTS_SCHEMA, CALLS_SCHEMA, RUNS_SCHEMA, to_table, write_table
from mabench.datasets.tr110_files import LayoutError, check_tests, run_dirs

SOURCE = "tr110"
LEGACY_SPEEDUP = 1.5  # TR110's contention rule (read off its data; see reanalyse())
_TEST_DIR = re.compile(r"phase_(\d+)_test_(\d+)$")

#: What the bundled dataset's README says about how TR110 was measured (not in its JSON).
METHODOLOGY: dict[str, str] = {
    "hardware": "NVIDIA GeForce RTX 4080 Laptop GPU (12 GB), per the dataset's README; "
    "TR110's JSON files record no hardware",
    "servers": "two Ollama servers, collector on :11434 and insight on :11435 (from the "
    "URLs recorded in every summary.json)",
    "protocol": "both agents started together and timed while sharing the machine; no solo "
    "phase, no per-call records, run order as in test_execution_log.json",
    "throughput": "agent tok/s as TR110 recorded it (average_tokens_per_second); its "
    "definition is not part of the data",
}


def bundled_dir() -> Path:
    """The package copy of the TR110 dataset."""
    return Path(str(resources.files("mabench").joinpath("datasets/data/tr110")))


@dataclass(frozen=True)
class TestDir:
    phase: int
    test: int
    path: Path

    @property
    def config_id(self) -> str:
        return f"test{self.test:03d}"


def test_dirs(src_dir: Path) -> list[TestDir]:
    """The test folders of a TR110 results folder, by test number (:class:`LayoutError` when
    there are none, or two are the same test)."""
    if not Path(src_dir).is_dir():
        raise LayoutError([f"{src_dir}: not a folder"])
    found = []
    for path in sorted(Path(src_dir).iterdir()):
        m = _TEST_DIR.match(path.name)
        if m and path.is_dir():
            found.append(TestDir(int(m.group(1)), int(m.group(2)), path))
    if not found:
        raise LayoutError([f"{src_dir}: no phase_<P>_test_<NNN> folders (TR110 layout)"])
    by_config: dict[str, list[Path]] = {}
    for t in found:
        by_config.setdefault(t.config_id, []).append(t.path)
    twice = [f"{', '.join(map(str, p))}: all are {c}" for c, p in by_config.items() if len(p) > 1]
    if twice:
        raise LayoutError(twice)
    return sorted(found, key=lambda t: t.test)


def _config_hash(summary: dict[str, Any]) -> str:
    key = {
        "scenario": summary.get("scenario"),
        "chimera_overrides": summary.get("chimera_overrides"),
        "chimera_overrides_agent2": summary.get("chimera_overrides_agent2"),
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def _server(url: str | None) -> str | None:
    return None if url is None else re.sub(r"^https?://", "", url).rstrip("/")


def _run_dirs(test: TestDir) -> list[tuple[int, Path]]:
    """(run index, folder) of each run of a test, in run order (the folders the file checks
    of :mod:`mabench.datasets.tr110_files` read)."""
    return run_dirs(test.path)


def _run_row(
    key: dict[str, Any], summary: dict[str, Any], metrics: dict[str, Any], record_path: str
) -> dict[str, Any]:
    """One row of the runs table from a TR110 metrics.json (and its test's summary.json)."""
    s = metrics["summary"]
    urls = [s.get("collector_ollama_url"), s.get("insight_ollama_url")]
    durations = [s["baseline_duration"], s["chimera_duration"]]
    wall = s["concurrent_wall_time"]
    conc_sum = durations[0] + durations[1]
    speedup = conc_sum / wall
    models = sorted({metrics[a]["model"] for a in ("collector", "insight")})
    n_calls = [
        metrics[a]["aggregate_metrics"].get("total_requests") for a in ("collector", "insight")
    ]
    return {
        **key,
        "phase_order": "concurrent",
        "topology": "dedicated" if len(set(urls)) == len(urls) else "shared",
        "n_agents": 2,
        "n_servers": len(set(urls)),
        "model": "+".join(models),
        "backend": "ollama",
        "concurrent_wall_s": wall,
        "concurrent_sum_s": conc_sum,
        "seed_speedup": speedup,
        "seed_efficiency": 100.0 * speedup / 2,
        "coordination_overhead_ms": (wall - max(durations)) * 1000.0,
        "throughput_delta": s["baseline_throughput"] - s["chimera_throughput"],
        "ttft_delta_ms": s["ttft_delta_ms"],
        "contention_legacy": bool(s["resource_contention_detected"]),
        "n_calls": sum(n_calls) if None not in n_calls else None,
        "config_hash": _config_hash(summary),
        "record_path": record_path,
    }


def _agent_rows(key: dict[str, Any], metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """The two rows of the agents table (collector, insight) from a TR110 metrics.json."""
    s = metrics["summary"]
    urls = [s.get("collector_ollama_url"), s.get("insight_ollama_url")]
    durations = [s["baseline_duration"], s["chimera_duration"]]
    rows = []
    for name, url, duration in zip(("collector", "insight"), urls, durations, strict=True):
        a = metrics[name]
        agg = a["aggregate_metrics"]
        rows.append(
            {
                **key,
                "agent": name,
                "workload": name,
                "server": _server(url),
                "model": a["model"],
                "options_json": json.dumps(a.get("configuration") or {}, sort_keys=True),
                "n_calls": agg.get("total_requests"),
                "concurrent_wall_s": duration,
                "concurrent_tps": agg.get("average_tokens_per_second"),
                "concurrent_ttft_ms": agg.get("average_ttft_ms"),
                "concurrent_eval_count": agg.get("total_tokens_generated"),
            }
        )
    return rows


def read_rows(src_dir: str | Path | None = None, study: str = "tr110") -> dict[str, list[dict]]:
    """Read the TR110 layout into row dicts for the runs and agents tables."""
    src = Path(src_dir) if src_dir is not None else bundled_dir()
    runs: list[dict[str, Any]] = []
    agents: list[dict[str, Any]] = []
    tests = test_dirs(src)
    check_tests([t.path for t in tests])  # every file as expected, or LayoutError naming each
    for t in tests:
        summary = json.loads((t.path / "summary.json").read_text())
        for run_index, run_dir in _run_dirs(t):
            metrics = json.loads((run_dir / "metrics.json").read_text())
            key = {
                "study": study,
                "source": SOURCE,
                "config_id": t.config_id,
                "scenario": summary["scenario"],
                "run_index": run_index,
            }
            path = str(run_dir.relative_to(src) / "metrics.json")
            runs.append(_run_row(key, summary, metrics, path))
            agents.extend(_agent_rows(key, metrics))
    return {"runs": runs, "agents": agents, "calls": []}


def import_tr110(
    src_dir: str | Path | None, out_dir: str | Path, study: str = "tr110"
) -> dict[str, Path]:
    """Write runs.parquet / agents.parquet / calls.parquet for the TR110 dataset at ``src_dir``
    (``None``: the bundled copy) into ``out_dir``; returns the paths by table name."""
    rows = read_rows(src_dir, study)
    out = Path(out_dir)
    paths = {name: out / f"{name}.parquet" for name in ("runs", "agents", "calls")}
    write_table(to_table(rows["runs"], RUNS_SCHEMA), paths["runs"])
    write_table(to_table(rows["agents"], AGENTS_SCHEMA), paths["agents"])
    write_table(to_table(rows["calls"], CALLS_SCHEMA), paths["calls"])
    return paths


def frames(src_dir: str | Path | None = None, study: str = "tr110") -> dict[str, pd.DataFrame]:
    """The three tables as DataFrames, without writing files (schema-typed via Arrow)."""
    rows = read_rows(src_dir, study)
    schemas = {"runs": RUNS_SCHEMA, "agents": AGENTS_SCHEMA, "calls": CALLS_SCHEMA}
    return {name: to_table(rows[name], schemas[name]).to_pandas() for name in schemas}


# ---------------------------------------------------------------------------------------------
# Reanalysis: what TR110's own files say about TR110's numbers
# ---------------------------------------------------------------------------------------------


def _raw_runs(src: Path) -> pd.DataFrame:
    rows = []
    for t in test_dirs(src):
        summary = json.loads((t.path / "summary.json").read_text())
        stored = {r["run_number"]: r for r in summary["runs"]}
        for run_index, run_dir in _run_dirs(t):
            s = json.loads((run_dir / "metrics.json").read_text())["summary"]
            rows.append(
                {
                    "config_id": t.config_id,
                    "run_index": run_index,
                    **{k: s[k] for k in _RAW_KEYS},
                    "same_as_summary_json": stored.get(run_index) == s,
                }
            )
    return pd.DataFrame(rows)


_RAW_KEYS = (
    "baseline_throughput",
    "chimera_throughput",
    "throughput_delta",
    "baseline_ttft_ms",
    "chimera_ttft_ms",
    "ttft_delta_ms",
    "baseline_duration",
    "chimera_duration",
    "concurrent_wall_time",
    "sequential_estimated_time",
    "concurrency_speedup",
    "resource_contention_detected",
)


def per_test(runs: pd.DataFrame, src_dir: str | Path | None = None) -> pd.DataFrame:
    """Per-test averages recomputed from our runs table beside the ones TR110's summary.json
    stored (``stored_*``), one row per test."""
    src = Path(src_dir) if src_dir is not None else bundled_dir()
    stored = []
    for t in test_dirs(src):
        summary = json.loads((t.path / "summary.json").read_text())
        agg = summary["aggregate"]
        stored.append(
            {
                "config_id": t.config_id,
                "phase": t.phase,
                "stored_speedup": agg["average_concurrency_speedup"],
                "stored_efficiency": agg["average_efficiency"],
                "stored_contention_runs": agg["contention_detected_runs"],
                "stored_throughput_delta": agg["average_throughput_delta"],
                "stored_ttft_delta_ms": agg["average_ttft_delta_ms"],
            }
        )
    g = runs.groupby("config_id", sort=True)
    ours = pd.DataFrame(
        {
            "scenario": g["scenario"].first(),
            "n_runs": g.size(),
            "speedup": g["seed_speedup"].mean(),
            "efficiency": g["seed_efficiency"].mean(),
            "contention_runs": g["contention_legacy"].apply(lambda s: int(s.astype(bool).sum())),
            "throughput_delta": g["throughput_delta"].mean(),
            "ttft_delta_ms": g["ttft_delta_ms"].mean(),
        }
    ).reset_index()
    out = pd.DataFrame(stored).merge(ours, on="config_id", how="outer")
    out["speedup_abs_diff"] = (out["speedup"] - out["stored_speedup"]).abs()
    out["efficiency_abs_diff"] = (out["efficiency"] - out["stored_efficiency"]).abs()
    out["throughput_delta_sum"] = out["throughput_delta"] + out["stored_throughput_delta"]
    out["reproduced"] = (
        (out["speedup_abs_diff"] < 1e-9)
        & (out["efficiency_abs_diff"] < 1e-7)
        & (out["contention_runs"] == out["stored_contention_runs"])
    )
    return out


def _check(check: str, description: str, computed: float | None, **kw: Any) -> dict[str, Any]:
    return {
        "check": check,
        "description": description,
        "computed": None if computed is None else float(computed),
        "claimed": kw.get("claimed"),
        "claim_source": kw.get("claim_source"),
        "agrees": kw.get("agrees"),
        "finding": kw.get("finding", ""),
    }


def _consistency_checks(
    runs: pd.DataFrame, raw: pd.DataFrame, pt: pd.DataFrame
) -> list[dict[str, Any]]:
    """Does TR110 agree with itself: counts, stored averages, copies, its own formulas."""
    n_rep = int(pt["reproduced"].sum())
    same = int(raw["same_as_summary_json"].sum())
    seq_err = (
        raw["sequential_estimated_time"] - (raw["baseline_duration"] + raw["chimera_duration"])
    ).abs()
    sp_err = (
        raw["concurrency_speedup"] - raw["sequential_estimated_time"] / raw["concurrent_wall_time"]
    ).abs()
    return [
        _check("n_runs", "runs in the dataset", len(runs)),
        _check("n_configs", "configurations (tests)", runs["config_id"].nunique()),
        _check(
            "per_test_reproduced",
            "per-test averages (speedup, efficiency, contention count) recomputed from the runs "
            "equal the ones in summary.json",
            n_rep,
            claimed=float(len(pt)),
            claim_source="summary.json (aggregate)",
            agrees=n_rep == len(pt),
        ),
        _check(
            "run_copies_identical",
            "runs whose metrics.json summary equals the copy in summary.json",
            same,
            claimed=float(len(raw)),
            claim_source="metrics.json vs summary.json",
            agrees=same == len(raw),
        ),
        _check(
            "sequential_is_concurrent_sum",
            "max |sequential_estimated_time - (collector + insight duration)| in s: the "
            "'sequential' time is the sum of the two durations measured while both ran at once",
            seq_err.max(),
            agrees=bool(seq_err.max() < 1e-6),
        ),
        _check(
            "speedup_formula",
            "max |concurrency_speedup - sequential_estimated_time / concurrent_wall_time|",
            sp_err.max(),
            agrees=bool(sp_err.max() < 1e-9),
        ),
    ]


def _efficiency_checks(eff: pd.Series) -> list[dict[str, Any]]:
    """The distribution of run efficiency."""
    return [
        _check("mean_efficiency", "mean efficiency over all runs (%)", eff.mean()),
        _check("median_efficiency", "median efficiency over all runs (%)", eff.median()),
        _check("std_efficiency", "standard deviation of run efficiency (pp)", eff.std()),
        _check("cv_efficiency", "CV of run efficiency (%)", 100 * eff.std() / eff.mean()),
        _check("max_efficiency", "best single run efficiency (%)", eff.max()),
        _check("min_efficiency", "worst single run efficiency (%)", eff.min()),
    ]


def _contention_checks(raw: pd.DataFrame, flags: pd.Series) -> list[dict[str, Any]]:
    """What TR110's contention flag is: the speedup rule, not the TTFT rule it describes."""
    rule = (raw["concurrency_speedup"] < LEGACY_SPEEDUP) == raw["resource_contention_detected"]
    ttft_gap = raw["ttft_delta_ms"].abs() > 3000
    ttft_flagged = (ttft_gap & raw["resource_contention_detected"]).sum()
    return [
        _check("legacy_flagged", "runs flagged as contention by TR110", flags.sum()),
        _check("legacy_flagged_pct", "share of runs flagged as contention (%)", 100 * flags.mean()),
        _check(
            "contention_rule_threshold",
            "speedup threshold tested as TR110's contention rule",
            LEGACY_SPEEDUP,
        ),
        _check(
            "contention_rule_is_speedup",
            f"runs where TR110's contention flag equals (speedup below {LEGACY_SPEEDUP})",
            rule.sum(),
            claimed=float(len(raw)),
            claim_source="the flag as stored",
            agrees=bool(rule.all()),
        ),
        _check(
            "ttft_gap_runs",
            "runs where the two agents' TTFTs differ by more than 3000 ms",
            ttft_gap.sum(),
        ),
        _check("ttft_gap_runs_flagged", "of those, runs TR110 flagged as contention", ttft_flagged),
    ]


def _sign_checks(raw: pd.DataFrame) -> list[dict[str, Any]]:
    """Whether the stored deltas follow the formula the reports state (collector - insight)."""
    tp_reversed = (
        raw["throughput_delta"] - (raw["chimera_throughput"] - raw["baseline_throughput"])
    ).abs() < 1e-9
    ttft_ok = (
        raw["ttft_delta_ms"] - (raw["baseline_ttft_ms"] - raw["chimera_ttft_ms"])
    ).abs() < 1e-6
    return [
        _check(
            "throughput_delta_sign",
            "runs whose stored throughput_delta equals insight minus collector "
            "(chimera_throughput - baseline_throughput)",
            tp_reversed.sum(),
            claimed=0.0,
            claim_source="the stated formula: collector_throughput - insight_throughput",
            agrees=bool(not tp_reversed.any()),
        ),
        _check(
            "ttft_delta_sign",
            "runs whose stored ttft_delta_ms equals collector minus insight",
            ttft_ok.sum(),
            claimed=float(len(raw)),
            claim_source="the stated formula: collector_ttft - insight_ttft",
            agrees=bool(ttft_ok.all()),
        ),
    ]


def _best_config_checks(pt: pd.DataFrame) -> list[dict[str, Any]]:
    """The best per-test mean efficiency, overall and per scenario."""
    best = pt.loc[pt["efficiency"].idxmax()]
    rows = [
        _check(
            "best_config_efficiency",
            f"best per-test mean efficiency (%), {best['config_id']} ({best['scenario']})",
            best["efficiency"],
        )
    ]
    for scen, grp in pt.groupby("scenario"):
        top = grp.loc[grp["efficiency"].idxmax()]
        rows.append(
            _check(
                f"best_{scen}",
                f"best {scen} per-test mean efficiency (%), {top['config_id']}",
                top["efficiency"],
            )
        )
    return rows


def reanalyse(runs: pd.DataFrame, src_dir: str | Path | None = None) -> dict[str, pd.DataFrame]:
    """Recompute TR110's numbers from its own files.

    Returns ``checks`` (one row per check: computed value, what the source claimed, whether
    they agree, and the finding in words built from computed values) and ``per_test``.
    ``runs`` is the imported runs table (source ``tr110``).
    """
    src = Path(src_dir) if src_dir is not None else bundled_dir()
    raw = _raw_runs(src)
    pt = per_test(runs, src)
    checks = [
        *_consistency_checks(runs, raw, pt),
        *_efficiency_checks(runs["seed_efficiency"].astype(float)),
        *_contention_checks(raw, runs["contention_legacy"].astype(bool)),
        *_sign_checks(raw),
        *_best_config_checks(pt),
    ]
    return {"checks": pd.DataFrame(checks), "per_test": pt}


def check_value(checks: pd.DataFrame, name: str) -> float:
    row = checks.loc[checks["check"] == name, "computed"]
    if row.empty:
        raise KeyError(name)
    return float(row.iloc[0])


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "src_dir",
        nargs="?",
        type=Path,
        default=None,
        help="TR110 results folder (phase_<P>_test_<NNN>/...); default: the bundled copy",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("results/tr110/tables"),
        help="output folder for runs/agents/calls.parquet (default: results/tr110/tables)",
    )
    parser.add_argument("--study", default="tr110", help="study name written into the tables")


def main(args: argparse.Namespace) -> int:
    try:
        paths = import_tr110(args.src_dir, args.out, study=args.study)
    except LayoutError as exc:
        print(exc, file=sys.stderr)
        return 1
    runs = pd.read_parquet(paths["runs"])
    print(
        f"imported {len(runs)} runs of {runs['config_id'].nunique()} configs; "
        f"mean efficiency {np.mean(runs['seed_efficiency']):.2f} %"
    )
    for name, path in paths.items():
        print(f"  {name}: {path}")
    return 0


__all__ = [
    "METHODOLOGY",
    "SOURCE",
    "LayoutError",
    "bundled_dir",
    "check_value",
    "configure",
    "frames",
    "import_tr110",
    "main",
    "per_test",
    "read_rows",
    "reanalyse",
]
