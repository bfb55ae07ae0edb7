"""Benchmark 4 -- analysis scale: 1k, 10k and 100k run records through the analysis.

Synthetic, schema-valid run records (:mod:`benchmarks.synthetic_records`, generated once and
cached) go through the same steps as the pipeline's rules after the measurements:

1. ``aggregate``: ``mabench.aggregate.aggregate`` (records → runs/agents/calls Parquet);
2. ``statistics``: ``mabench.stats.run`` (tables → statistics Parquet + summary.json);
3. ``figures``: ``mabench.plots.make_figures`` (after reading the tables and statistics);
4. ``report``: ``mabench.report.render_report`` (→ technical_report.md).

Each size runs in a fresh Python process; the wall time of every step and the process's
peak RSS (``ru_maxrss``) are reported. Goals: 100k runs in ≤ 60 s and ≤ 2 GB on 2 cores, and
cost growing about linearly (time(100k) / time(10k) ≤ 12).

``variant``: ``product`` is the library as it is; ``proposed`` applies the proposed fixes,
measured before they are made: the aggregate step is
:func:`benchmarks.experimental_aggregate.aggregate_chunked` (output tables checked equal to the
product's at the smallest size) and ``mabench.stats.bootstrap_ci`` is replaced by
:func:`benchmarks.experimental_stats.bootstrap_ci_proposed` (identical below 1,000 values,
normal-approximation CI above; the largest CI difference is reported).
A step that is not in the library yet is reported as unavailable.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT, WORK_DIR, Result, log

TITLE = "Analysis scale: aggregate, statistics and report at 1k/10k/100k runs"
FULL = {
    "sizes": [1000, 10000, 100000],
    "variants": ["product", "proposed"],
    "limit_s": 2400,
    "limit_mb": 8192,
}
QUICK = {"sizes": [100, 400], "variants": ["product", "proposed"], "limit_s": 300, "limit_mb": 4096}
GOAL_S, GOAL_GB, GOAL_GROWTH = 60.0, 2.0, 12.0
STAGES = ("aggregate", "statistics", "figures", "report")


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(size: int, variant: str, work: Path) -> dict[str, Any]:
    """Run the analysis steps on ``size`` records in this (fresh) process."""
    from benchmarks.synthetic_records import ensure_records

    paths = ensure_records(size)
    work.mkdir(parents=True, exist_ok=True)
    tables, stats_dir, figures = work / "tables", work / "stats", work / "figures"
    report_path = work / "technical_report.md"
    out: dict[str, Any] = {
        "size": size,
        "variant": variant,
        "stages": {},
        "rss_start_mb": _rss_mb(),
    }
    settings = {"title": f"Scale test ({size} runs)", "study": "scale"}
    state: dict[str, Any] = {}

    def stage_aggregate() -> None:
        if variant == "product":
            from mabench.aggregate import aggregate

            aggregate(paths, tables)
        else:
            from benchmarks.experimental_aggregate import aggregate_chunked

            aggregate_chunked(paths, tables)

    def stage_statistics() -> None:
        from mabench import stats

        if variant == "proposed":
            from benchmarks.experimental_stats import apply

            apply()
        stats.run(tables, stats_dir, None)

    def stage_figures() -> None:
        from mabench import plots, stats

        t = stats.read_tables(tables)
        st = stats.load_statistics(stats_dir)
        state["made"] = len(plots.make_figures(t["runs"], t["agents"], t["calls"], st, figures))

    def stage_report() -> None:
        from mabench.report import render_report

        render_report(stats_dir, tables, figures, settings, report_path)

    failed = False
    for name, fn in zip(
        STAGES, (stage_aggregate, stage_statistics, stage_figures, stage_report), strict=True
    ):
        entry: dict[str, Any] = {}
        if failed:
            entry["status"] = "skipped (an earlier step failed)"
            out["stages"][name] = entry
            continue
        t0 = time.perf_counter()
        try:
            fn()
            entry["status"] = "ok"
        except ImportError as exc:
            entry["status"] = f"unavailable: {exc}"
            failed = True
        except Exception as exc:
            entry["status"] = f"error: {type(exc).__name__}: {exc}"
            entry["traceback"] = traceback.format_exc()[-3000:]
            failed = True
        entry["wall_s"] = time.perf_counter() - t0
        entry["peak_rss_mb_after"] = _rss_mb()
        out["stages"][name] = entry
        print(
            f"[child {size} {variant}] {name}: {entry['status']} {entry['wall_s']:.2f} s",
            file=sys.stderr,
            flush=True,
        )
    out["figures_made"] = state.get("made")
    out["peak_rss_mb"] = _rss_mb()
    out["total_s"] = sum(e.get("wall_s", 0.0) for e in out["stages"].values())
    out["complete"] = all(e.get("status") == "ok" for e in out["stages"].values())
    if report_path.exists():
        out["report_bytes"] = report_path.stat().st_size
    return out


def _run_child(size: int, variant: str, limit_s: float, limit_mb: float) -> dict[str, Any]:
    """One size in a fresh process, killed past ``limit_s`` or ``limit_mb`` of RSS (the machine
    is shared: an analysis that would need more memory must fail here, not wake the OOM
    killer)."""
    import psutil

    work = WORK_DIR / "analysis" / f"{variant}-{size}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.analysis_scale",
        "--child",
        str(size),
        variant,
        str(work),
    ]
    out_path, err_path = work / "child.out", work / "child.err"
    t0 = time.perf_counter()
    peak_mb, killed = 0.0, None
    with open(out_path, "w") as out_fh, open(err_path, "w") as err_fh:
        cap = int(2 * limit_mb * 2**20)  # address-space backstop: MemoryError, not the OOM killer

        def backstop() -> None:
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out_fh, stderr=err_fh, preexec_fn=backstop)
        ps = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                rss = ps.memory_info().rss / 2**20
            except psutil.Error:
                rss = 0.0
            peak_mb = max(peak_mb, rss)
            if rss > limit_mb:
                killed = f"killed: RSS {rss / 1024:.1f} GB above the {limit_mb / 1024:g} GB limit"
            elif time.perf_counter() - t0 > limit_s:
                killed = f"killed: running longer than {limit_s:g} s"
            if killed:
                proc.kill()
                proc.wait()
                break
            time.sleep(0.1)
    wall = time.perf_counter() - t0
    stderr = err_path.read_text()
    lines = [ln for ln in out_path.read_text().splitlines() if ln.startswith("{")]
    if killed or proc.returncode != 0 or not lines:
        done = [ln for ln in stderr.splitlines() if ln.startswith("[child")]
        return {
            "size": size,
            "variant": variant,
            "status": killed or f"crashed (exit {proc.returncode})",
            "total_s": None,
            "peak_rss_mb": peak_mb,
            "steps_done": done,
            "stderr_tail": stderr[-3000:],
            "process_wall_s": wall,
        }
    out = json.loads(lines[-1])
    out["status"] = "complete" if out["complete"] else "incomplete"
    out["process_wall_s"] = wall
    out["sampled_peak_rss_mb"] = peak_mb
    return out


def _tables_equal(size: int) -> dict[str, bool]:
    import pyarrow.parquet as pq

    a, b = WORK_DIR / "analysis" / f"product-{size}", WORK_DIR / "analysis" / f"proposed-{size}"
    return {
        name: pq.read_table(a / "tables" / f"{name}.parquet").equals(
            pq.read_table(b / "tables" / f"{name}.parquet")
        )
        for name in ("runs", "agents", "calls", "failures")
        if (a / "tables" / f"{name}.parquet").exists()
        and (b / "tables" / f"{name}.parquet").exists()
    }


def _ci_difference(size: int) -> dict[str, Any]:
    """How far the proposed bootstrap's CIs are from the library's (same rows, both runs)."""
    import pandas as pd

    a, b = WORK_DIR / "analysis" / f"product-{size}", WORK_DIR / "analysis" / f"proposed-{size}"
    out: dict[str, Any] = {}
    for name in ("run_summary", "agent_summary", "call_summary", "paired", "seed_vs_true"):
        pa_, pb_ = a / "stats" / f"{name}.parquet", b / "stats" / f"{name}.parquet"
        if not (pa_.exists() and pb_.exists()):
            continue
        x, y = pd.read_parquet(pa_), pd.read_parquet(pb_)
        if len(x) != len(y) or "ci_low" not in x:
            out[name] = "not comparable"
            continue
        hw = (x["ci_high"] - x["ci_low"]) / 2
        d = pd.concat(
            [(x["ci_low"] - y["ci_low"]).abs(), (x["ci_high"] - y["ci_high"]).abs()], axis=1
        ).max(axis=1)
        rel = (d / hw.where(hw > 0)).dropna()
        changed = rel[rel > 0]
        out[name] = {
            "rows": len(x),
            "rows_changed": len(changed),
            "max_rel_to_half_width": float(changed.max()) if len(changed) else 0.0,
            "median_rel_to_half_width": float(changed.median()) if len(changed) else 0.0,
        }
    return out


def _goals(res: Result, results: list[dict[str, Any]], p: dict[str, Any]) -> None:
    """The goals, from the per-size results."""
    for variant in p["variants"]:
        by = {r["size"]: r for r in results if r["variant"] == variant}
        big, mid = max(p["sizes"]), sorted(p["sizes"])[-2]
        rb, rm = by.get(big, {}), by.get(mid, {})
        complete = rb.get("status") == "complete"
        how = (
            "all four steps"
            if complete
            else f"{rb.get('status')}; steps: "
            + ", ".join(
                [f"{k} {v.get('status')}" for k, v in rb.get("stages", {}).items()]
                + [x.split("] ", 1)[-1] for x in rb.get("steps_done") or []]
            )
        )
        if variant != "product":
            how = f"[{variant}: aggregate + statistics fixes] " + how
        suffix = "" if variant == "product" else f" ({variant})"
        tag = "" if variant == "product" else f"[{variant}: aggregate + statistics fixes] "
        wall = rb.get("total_s")
        if wall is None and str(rb.get("status", "")).startswith("killed"):
            wall = rb.get("process_wall_s")  # it ran this long and was not done: a lower bound
            how += " -- measured: time until it was killed (a lower bound)"
        res.goal(f"wall time at {big} runs{suffix}", wall, "<=", GOAL_S, "s", how)
        peak = rb.get("peak_rss_mb")
        res.goal(
            f"peak memory at {big} runs{suffix}",
            None if peak is None else peak / 1024,
            "<=",
            GOAL_GB,
            "GB",
            tag + "ru_maxrss of the analysis process"
            if complete
            else f"{rb.get('status')}: sampled RSS when it stopped (a lower bound)",
        )
        growth = (
            rb["total_s"] / rm["total_s"]
            if rb.get("total_s") and rm.get("total_s") and rm.get("status") == rb.get("status")
            else None
        )
        res.goal(
            f"growth time({big}) / time({mid}){suffix}",
            growth,
            "<=",
            GOAL_GROWTH,
            "",
            tag + "same steps at both sizes"
            if growth is not None
            else f"not computable: {big} runs {rb.get('status')}",
        )


def run(quick: bool = False) -> Result:
    from benchmarks.synthetic_records import ensure_records

    p = dict(QUICK if quick else FULL)
    res = Result("analysis_scale", TITLE)
    res.details["parameters"] = {**p, "cpus": os.cpu_count()}
    t0 = time.perf_counter()
    ensure_records(max(p["sizes"]))
    res.details["generation_s"] = time.perf_counter() - t0
    results: list[dict[str, Any]] = []
    for size in p["sizes"]:
        for variant in p["variants"]:
            log(f"analysis_scale: {size} runs, {variant}")
            r = _run_child(size, variant, p["limit_s"], p["limit_mb"])
            results.append(r)
            stages = {
                k: (v.get("status"), round(v.get("wall_s", 0), 2))
                for k, v in r.get("stages", {}).items()
            }
            log(
                f"analysis_scale: {size} {variant}: {r['status']}, total {r.get('total_s')}, peak {r.get('peak_rss_mb')} MB, {stages}"
            )
        both = "product" in p["variants"] and "proposed" in p["variants"]
        if both and size == p["sizes"][0]:
            res.details["proposed_tables_equal_product"] = _tables_equal(size)
        if both:
            res.details.setdefault("proposed_ci_difference", {})[str(size)] = _ci_difference(size)
    res.details["results"] = results

    _goals(res, results, p)
    res.notes.append(
        "Goals are evaluated on the steps that exist; a step reported 'unavailable' is not in "
        "the library yet (re-run when it is)."
    )
    return res


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", nargs=3, metavar=("SIZE", "VARIANT", "WORKDIR"), required=True)
    a = ap.parse_args()
    size, variant, work = int(a.child[0]), a.child[1], Path(a.child[2])
    print(json.dumps(child(size, variant, work)))
