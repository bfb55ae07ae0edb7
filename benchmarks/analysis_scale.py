"""Benchmark 4 -- analysis scale: 1k, 10k and 100k run records through the analysis.

Synthetic, schema-valid run records (:mod:`mabench.datasets.synthetic`, generated once and
cached) go through the same steps as the pipeline's rules after the measurements:

1. ``aggregate``: ``mabench.analysis.aggregate.aggregate`` (records → runs/agents/calls Parquet);
2. ``statistics``: ``mabench.analysis.stats.run`` (tables → statistics Parquet + summary.json);
3. ``figures``: ``mabench.analysis.plots.make_figures`` (after reading the tables and statistics);
4. ``report``: ``mabench.analysis.report.render_report`` (→ technical_report.md).

Each size runs in a fresh Python process; the wall time of every step is reported. Goals:
100k runs in ≤ 60 s and ≤ 2 GB on 2 cores, and cost growing about linearly
(time(100k) / time(10k) ≤ 12).

Peak memory counts the aggregate step's worker processes too. ``aggregate`` reads chunks of
records in a pool of forked workers (:func:`mabench.analysis.aggregate.worker_count`); the analysis
process's own ``ru_maxrss`` does not include them, and ``RUSAGE_CHILDREN`` gives only the
largest waited-for child's peak. The reported peak is therefore the bound

    max(ru_maxrss(self) at the end,
        ru_maxrss(self) after aggregate + workers × ru_maxrss(children))

which is at least the true concurrent peak (each worker counted at its own peak, all at once,
and a forked worker's pages shared with the parent counted twice). Next to it the parent
process samples the RSS of the whole process tree every 0.1 s (``sampled_peak_rss_mb``, a
lower bound); it also enforces the memory limit on that sum.
"""

from __future__ import annotations

import argparse
import contextlib
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
FULL = {"sizes": [1000, 10000, 100000], "limit_s": 2400, "limit_mb": 8192}
QUICK = {"sizes": [100, 400], "limit_s": 300, "limit_mb": 4096}
GOAL_S, GOAL_GB, GOAL_GROWTH = 60.0, 2.0, 12.0
STAGES = ("aggregate", "statistics", "figures", "report")
#: the synthetic records' cache (:func:`mabench.datasets.synthetic.ensure_records`)
RECORDS_DIR = WORK_DIR / "records"


def _maxrss_mb(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024


def child(size: int, work: Path) -> dict[str, Any]:
    """Run the analysis steps on ``size`` records in this (fresh) process."""
    from mabench.analysis.aggregate import worker_count
    from mabench.datasets.synthetic import ensure_records

    paths = ensure_records(size, RECORDS_DIR)
    work.mkdir(parents=True, exist_ok=True)
    tables, stats_dir, figures = work / "tables", work / "stats", work / "figures"
    report_path = work / "technical_report.md"
    workers = worker_count(len(paths))
    out: dict[str, Any] = {
        "size": size,
        "stages": {},
        "rss_start_mb": _maxrss_mb(resource.RUSAGE_SELF),
        "children_rss_before_mb": _maxrss_mb(resource.RUSAGE_CHILDREN),
        "aggregate_workers": workers,
    }
    settings = {"title": f"Scale test ({size} runs)", "study": "scale"}
    state: dict[str, Any] = {}

    def stage_aggregate() -> None:
        from mabench.analysis.aggregate import aggregate

        aggregate(paths, tables, workers=workers)

    def stage_statistics() -> None:
        from mabench.analysis import stats

        stats.run(tables, stats_dir, None)

    def stage_figures() -> None:
        from mabench.analysis import plots, stats

        t = stats.read_tables(tables)
        st = stats.load_statistics(stats_dir)
        state["made"] = len(plots.make_figures(t["runs"], t["agents"], t["calls"], st, figures))

    def stage_report() -> None:
        from mabench.analysis.report import render_report

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
        except Exception as exc:
            entry["status"] = f"error: {type(exc).__name__}: {exc}"
            entry["traceback"] = traceback.format_exc()[-3000:]
            failed = True
        entry["wall_s"] = time.perf_counter() - t0
        entry["peak_rss_mb_after"] = _maxrss_mb(resource.RUSAGE_SELF)
        entry["children_peak_rss_mb_after"] = _maxrss_mb(resource.RUSAGE_CHILDREN)
        out["stages"][name] = entry
        print(
            f"[child {size}] {name}: {entry['status']} {entry['wall_s']:.2f} s",
            file=sys.stderr,
            flush=True,
        )
    agg = out["stages"]["aggregate"]
    self_peak = _maxrss_mb(resource.RUSAGE_SELF)
    during_aggregate = agg["peak_rss_mb_after"] + (
        workers * agg["children_peak_rss_mb_after"] if workers > 1 else 0.0
    )
    out["self_peak_rss_mb"] = self_peak
    out["aggregate_tree_peak_bound_mb"] = during_aggregate
    out["peak_rss_mb"] = max(self_peak, during_aggregate)
    out["figures_made"] = state.get("made")
    out["total_s"] = sum(e.get("wall_s", 0.0) for e in out["stages"].values())
    out["complete"] = all(e.get("status") == "ok" for e in out["stages"].values())
    if report_path.exists():
        out["report_bytes"] = report_path.stat().st_size
    return out


def _tree_rss_mb(ps: Any) -> float:
    """RSS of a process and all its descendants (MB); 0 for any that vanished meanwhile."""
    import psutil

    total = 0
    for p in [ps, *ps.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total / 2**20


def _run_child(size: int, limit_s: float, limit_mb: float) -> dict[str, Any]:
    """One size in a fresh process, killed past ``limit_s`` or ``limit_mb`` of RSS summed over
    its process tree (the machine is shared: an analysis that would need more memory must
    fail here, not wake the OOM killer)."""
    import psutil

    work = WORK_DIR / "analysis" / f"size-{size}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "benchmarks.analysis_scale", "--child", str(size), str(work)]
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
                rss = _tree_rss_mb(ps)
            except psutil.Error:
                rss = 0.0
            peak_mb = max(peak_mb, rss)
            if rss > limit_mb:
                killed = f"killed: RSS {rss / 1024:.1f} GB above the {limit_mb / 1024:g} GB limit"
            elif time.perf_counter() - t0 > limit_s:
                killed = f"killed: running longer than {limit_s:g} s"
            if killed:
                for p in ps.children(recursive=True):
                    p.kill()
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


def _goals(res: Result, results: list[dict[str, Any]], p: dict[str, Any]) -> None:
    """The goals, from the per-size results."""
    by = {r["size"]: r for r in results}
    big, mid = max(p["sizes"]), sorted(p["sizes"])[-2]
    rb, rm = by.get(big, {}), by.get(mid, {})
    complete = rb.get("status") == "complete"
    how = (
        "all four steps: "
        + ", ".join(f"{k} {v['wall_s']:.1f} s" for k, v in rb.get("stages", {}).items())
        if complete
        else f"{rb.get('status')}; steps: "
        + ", ".join(
            [f"{k} {v.get('status')}" for k, v in rb.get("stages", {}).items()]
            + [x.split("] ", 1)[-1] for x in rb.get("steps_done") or []]
        )
    )
    wall = rb.get("total_s")
    if wall is None and str(rb.get("status", "")).startswith("killed"):
        wall = rb.get("process_wall_s")  # it ran this long and was not done: a lower bound
        how += " -- measured: time until it was killed (a lower bound)"
    res.goal(f"wall time at {big} runs", wall, "<=", GOAL_S, "s", how)
    peak = rb.get("peak_rss_mb")
    res.goal(
        f"peak memory at {big} runs",
        None if peak is None else peak / 1024,
        "<=",
        GOAL_GB,
        "GB",
        (
            f"max(ru_maxrss of the analysis process, its peak after aggregate + "
            f"{rb.get('aggregate_workers')} aggregate workers x their largest ru_maxrss); "
            f"sampled process-tree RSS peak {rb.get('sampled_peak_rss_mb', 0) / 1024:.2f} GB"
        )
        if complete
        else f"{rb.get('status')}: sampled RSS when it stopped (a lower bound)",
    )
    growth = (
        rb["total_s"] / rm["total_s"]
        if rb.get("total_s") and rm.get("total_s") and rm.get("status") == rb.get("status")
        else None
    )
    res.goal(
        f"growth time({big}) / time({mid})",
        growth,
        "<=",
        GOAL_GROWTH,
        "",
        "same four steps at both sizes"
        if growth is not None
        else f"not computable: {big} runs {rb.get('status')}",
    )


def run(quick: bool = False) -> Result:
    from mabench.datasets.synthetic import ensure_records

    p = dict(QUICK if quick else FULL)
    res = Result("analysis_scale", TITLE)
    res.details["parameters"] = {**p, "cpus": os.cpu_count()}
    t0 = time.perf_counter()
    log(f"analysis_scale: synthetic run records in {RECORDS_DIR}")
    ensure_records(max(p["sizes"]), RECORDS_DIR)
    res.details["generation_s"] = time.perf_counter() - t0
    results: list[dict[str, Any]] = []
    for size in p["sizes"]:
        log(f"analysis_scale: {size} runs")
        r = _run_child(size, p["limit_s"], p["limit_mb"])
        results.append(r)
        stages = {
            k: (v.get("status"), round(v.get("wall_s", 0), 2))
            for k, v in r.get("stages", {}).items()
        }
        log(
            f"analysis_scale: {size}: {r['status']}, total {r.get('total_s')}, "
            f"peak {r.get('peak_rss_mb')} MB, {stages}"
        )
    res.details["results"] = results
    _goals(res, results, p)
    return res


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", nargs=2, metavar=("SIZE", "WORKDIR"), required=True)
    a = ap.parse_args()
    print(json.dumps(child(int(a.child[0]), Path(a.child[1]))))
