"""The report's figures (matplotlib, Agg backend, PNG).

:func:`make_figures` draws every figure whose data exists and skips the others with a reason
(for example the run timeline for TR110, which recorded no per-call times). It writes
``figures.json`` beside the PNGs: one entry per figure in :data:`FIGURES` with its status
(``made`` or ``skipped``), title, file and reason, which the report reads
(:mod:`mabench.analysis.figures`, which needs no matplotlib). Each figure has a caption file ``report/captions/<name>.rst`` for ``snakemake --report``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.patches import Patch

from mabench.analysis.figures import FIGURES, read_manifest, write_manifest
from mabench.analysis.stats import (
    Statistics,
    load_statistics,
    prepare,
    primary_metric,
    read_tables,
)
from mabench.analysis.stats import scaling as scaling_laws

SEED_COLOR, TRUE_COLOR = "#8c8c8c", "#1f77b4"
DPI = 110


class Skip(Exception):
    """A figure whose data is absent; the message is the reason shown in the report."""


def _save(fig: plt.Figure, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI, metadata={"Software": None})
    plt.close(fig)


def _label(metric: str) -> str:
    return {
        "seed_efficiency": "seed formula",
        "true_efficiency": "true (vs one after another)",
        "interference_efficiency": "interference (vs solo)",
    }.get(metric, metric)


def _efficiency_distribution(ctx: dict[str, Any], path: Path) -> str | None:
    runs = ctx["runs"]
    fig, ax = plt.subplots(figsize=(7, 4))
    bins = np.linspace(
        min(runs[["seed_efficiency", "true_efficiency"]].min().min(), 100) - 1,
        max(runs[["seed_efficiency", "true_efficiency"]].max().max(), 100) + 1,
        31,
    )
    ax.hist(
        runs["seed_efficiency"].dropna(),
        bins=bins,
        alpha=0.7,
        color=SEED_COLOR,
        label="seed formula (both agents timed while sharing)",
    )
    note = None
    if runs["true_efficiency"].notna().any():
        ax.hist(
            runs["true_efficiency"].dropna(),
            bins=bins,
            alpha=0.7,
            color=TRUE_COLOR,
            label="true (solo baselines)",
        )
    else:
        note = "true efficiency not measured (no solo phase): seed formula only"
    ax.axvline(100, color="black", lw=0.8, ls=":")
    ax.set_xlabel("Efficiency (%)")
    ax.set_ylabel("Runs (count)")
    ax.set_title(FIGURES["efficiency_distribution"] + f" (n = {len(runs)} runs)")
    ax.legend(fontsize=8)
    _save(fig, path)
    return note


def _config_efficiency(ctx: dict[str, Any], path: Path) -> str | None:
    rs = ctx["stats"].run_summary
    cfg = rs[rs["level"] == "config"]
    configs = sorted(cfg["group"].unique())
    metrics = [
        m
        for m in ("seed_efficiency", "true_efficiency")
        if (cfg.loc[cfg["metric"] == m, "n"] > 0).any()
    ]
    if not configs or not metrics:
        raise Skip("no per-config efficiency")
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(configs) * len(metrics) + 2), 4.5))
    x = np.arange(len(configs))
    width = 0.8 / len(metrics)
    for i, metric in enumerate(metrics):
        sub = cfg[cfg["metric"] == metric].set_index("group").reindex(configs)
        mean = sub["mean"].to_numpy(float)
        lo = np.where(sub["ci_low"].notna(), mean - sub["ci_low"].to_numpy(float), 0)
        hi = np.where(sub["ci_high"].notna(), sub["ci_high"].to_numpy(float) - mean, 0)
        ax.errorbar(
            x + (i - (len(metrics) - 1) / 2) * width,
            mean,
            yerr=[lo, hi],
            fmt="o",
            capsize=3,
            ms=4,
            label=_label(metric),
            color=SEED_COLOR if metric == "seed_efficiency" else TRUE_COLOR,
        )
    ax.axhline(100, color="black", lw=0.8, ls=":")
    ax.set_xticks(x, configs, rotation=60, ha="right", fontsize=8)
    ax.set_xlabel("Config")
    ax.set_ylabel("Mean efficiency (%)")
    ax.set_title(FIGURES["config_efficiency"])
    ax.legend(fontsize=8)
    _save(fig, path)
    return None if len(metrics) == 2 else "seed formula only (no solo phase)"


def _speedup_by_scenario(ctx: dict[str, Any], path: Path) -> str | None:
    runs = ctx["runs"]
    scen = sorted(runs["scenario"].dropna().unique())
    metrics = [m for m in ("seed_speedup", "true_speedup") if runs[m].notna().any()]
    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(scen) * len(metrics)), 4.5))
    positions, data, colors, ticks = [], [], [], []
    for i, s in enumerate(scen):
        for j, m in enumerate(metrics):
            v = runs.loc[runs["scenario"] == s, m].dropna()
            positions.append(i * (len(metrics) + 1) + j)
            data.append(v.to_numpy(float))
            colors.append(SEED_COLOR if m == "seed_speedup" else TRUE_COLOR)
        ticks.append(i * (len(metrics) + 1) + (len(metrics) - 1) / 2)
    bp = ax.boxplot(data, positions=positions, widths=0.7, patch_artist=True)
    for patch, c in zip(bp["boxes"], colors, strict=True):
        patch.set_facecolor(c)
        patch.set_alpha(0.7)
    n_agents = runs["n_agents"].dropna()
    if len(n_agents) and n_agents.nunique() == 1:
        ax.axhline(
            float(n_agents.iloc[0]),
            color="black",
            lw=0.8,
            ls=":",
            label=f"ideal ({int(n_agents.iloc[0])} agents)",
        )
    for m in metrics:
        ax.plot(
            [],
            [],
            color=SEED_COLOR if m == "seed_speedup" else TRUE_COLOR,
            lw=6,
            alpha=0.7,
            label=_label(m.replace("speedup", "efficiency")),
        )
    ax.set_xticks(ticks, scen, fontsize=8)
    ax.set_xlabel("Scenario")
    ax.set_ylabel("Speedup (x)")
    ax.set_title(FIGURES["speedup_by_scenario"])
    ax.legend(fontsize=8)
    _save(fig, path)
    return None if len(metrics) == 2 else "seed formula only (no solo phase)"


def _seed_vs_true(ctx: dict[str, Any], path: Path) -> str | None:
    runs = ctx["runs"][["seed_efficiency", "true_efficiency", "scenario"]].dropna()
    if runs.empty:
        raise Skip("true efficiency not measured (no solo phase)")
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for s, g in runs.groupby("scenario", sort=True):
        ax.scatter(g["seed_efficiency"], g["true_efficiency"], s=18, alpha=0.8, label=str(s))
    lo = float(min(runs["seed_efficiency"].min(), runs["true_efficiency"].min())) - 2
    hi = float(max(runs["seed_efficiency"].max(), runs["true_efficiency"].max())) + 2
    ax.plot([lo, hi], [lo, hi], color="black", lw=0.8, ls=":", label="y = x")
    ax.set_xlabel("Seed-formula efficiency (%)")
    ax.set_ylabel("True efficiency (%)")
    ax.set_title(FIGURES["seed_vs_true"])
    ax.legend(fontsize=8)
    _save(fig, path)
    return None


def _ttft_split(ctx: dict[str, Any], path: Path) -> str | None:
    t = ctx["stats"].ttft_split
    if t is None or t.empty or "n_split" not in t:
        raise Skip("TTFT not measured")
    t = t[(t["level"] == "scenario") & (t["n_split"] > 0)]
    if t.empty:
        raise Skip("no server-side TTFT split (load and prompt-eval durations were not recorded)")
    t = t.sort_values(["group", "phase"], ascending=[True, False])
    labels = [f"{g}\n{p}" for g, p in zip(t["group"], t["phase"], strict=True)]
    fig, ax = plt.subplots(figsize=(max(6, 1.5 * len(t)), 5))
    bottom = np.zeros(len(t))
    for col, name, color in (
        ("load_ms", "model load", "#d62728"),
        ("prefill_ms", "prompt eval (prefill)", "#ff7f0e"),
        ("rest_ms", "rest (queueing, network, first decode)", "#2ca02c"),
    ):
        v = t[col].astype(float).fillna(0).clip(lower=0).to_numpy()
        ax.bar(labels, v, bottom=bottom, label=name, color=color)
        bottom += v
    ax.set_xlabel("Scenario and phase")
    ax.set_ylabel("Mean time to first token (ms)")
    ax.set_title(FIGURES["ttft_split"])
    plt.setp(ax.get_xticklabels(), rotation=25, ha="right", fontsize=8)
    ax.legend(fontsize=8)
    _save(fig, path)
    return None


def _pairs(df: pd.DataFrame) -> set[tuple[Any, ...]]:
    """The distinct rows of ``df`` as tuples (duplicates dropped before leaving pandas)."""
    return set(df.drop_duplicates().itertuples(index=False, name=None))


def _agent_throughput(ctx: dict[str, Any], path: Path) -> str | None:
    agents = ctx["agents"]
    if agents.empty or agents["concurrent_tps"].notna().sum() == 0:
        raise Skip("no per-agent throughput")
    has_solo = agents["solo_tps"].notna().any()
    groups = sorted(_pairs(agents[["scenario", "agent"]]))
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(groups)), 4.5))
    x = np.arange(len(groups))
    phases = [("solo_tps", "solo", TRUE_COLOR)] if has_solo else []
    phases.append(("concurrent_tps", "concurrent", SEED_COLOR))
    width = 0.8 / len(phases)
    for i, (col, name, color) in enumerate(phases):
        means, errs = [], []
        for s, a in groups:
            v = agents.loc[(agents["scenario"] == s) & (agents["agent"] == a), col].dropna()
            means.append(v.mean() if len(v) else np.nan)
            errs.append(v.std(ddof=1) if len(v) > 1 else 0)
        ax.bar(
            x + (i - (len(phases) - 1) / 2) * width,
            means,
            width,
            yerr=errs,
            capsize=3,
            label=name,
            color=color,
            alpha=0.85,
        )
    ax.set_xticks(x, [f"{s}\n{a}" for s, a in groups], fontsize=8)
    plt.setp(ax.get_xticklabels(), rotation=25, ha="right")
    ax.set_xlabel("Scenario and agent")
    ax.set_ylabel("Mean throughput (tok/s), error bar = 1 SD")
    title = FIGURES["agent_throughput"]
    ax.set_title(title if has_solo else title + " (solo not measured)")
    ax.legend(fontsize=8)
    _save(fig, path)
    return None if has_solo else "solo phase not measured: concurrent throughput only"


def _slowdown(ctx: dict[str, Any], path: Path) -> str | None:
    agents = ctx["agents"]
    if agents.empty or agents["slowdown"].notna().sum() == 0:
        raise Skip("slowdown needs a solo phase, which was not measured")
    groups = sorted(_pairs(agents.loc[agents["slowdown"].notna(), ["scenario", "agent"]]))
    data = [
        agents.loc[(agents["scenario"] == s) & (agents["agent"] == a), "slowdown"]
        .dropna()
        .to_numpy(float)
        for s, a in groups
    ]
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(groups)), 4.5))
    ax.boxplot(data)
    ax.set_xticks(np.arange(1, len(groups) + 1), [f"{s}\n{a}" for s, a in groups], fontsize=8)
    plt.setp(ax.get_xticklabels(), rotation=25, ha="right")
    ax.axhline(1.0, color="black", lw=0.8, ls=":", label="no slowdown")
    ax.set_xlabel("Scenario and agent")
    ax.set_ylabel("Slowdown (x, concurrent wall / solo wall)")
    ax.set_title(FIGURES["slowdown"])
    ax.legend(fontsize=8)
    _save(fig, path)
    return None


def timeline_run(runs: pd.DataFrame, calls: pd.DataFrame) -> tuple[str, int] | None:
    """The run the timeline shows: the one whose primary efficiency is closest to the median
    among runs with per-call data (ties: first config id, then run index)."""
    if calls.empty:
        return None
    have = calls[["config_id", "run_index"]].drop_duplicates()
    r = runs.merge(have, on=["config_id", "run_index"])
    metric = primary_metric(r)
    r = r[r[metric].notna()]
    if r.empty:
        return None
    med = r[metric].median()
    r = r.assign(_d=(r[metric] - med).abs()).sort_values(["_d", "config_id", "run_index"])
    return str(r.iloc[0]["config_id"]), int(r.iloc[0]["run_index"])


def _run_timeline(ctx: dict[str, Any], path: Path) -> str | None:
    calls = ctx["calls"]
    pick = timeline_run(ctx["runs"], calls)
    if pick is None:
        raise Skip("no per-call timing (the calls table is empty)")
    cid, run_index = pick
    c = calls[(calls["config_id"] == cid) & (calls["run_index"] == run_index)]
    c = c[c["t_sent_s"].notna() & c["t_done_s"].notna()]
    if c.empty:
        raise Skip("no per-call timing for the chosen run")
    t0 = float(c["t_sent_s"].min())
    lanes = sorted(
        {(p, a) for p, a in zip(c["phase"], c["agent"], strict=True)},
        key=lambda pa: (0 if pa[0] == "solo" else 1, pa[1]),
    )
    fig, ax = plt.subplots(figsize=(9, 0.6 * len(lanes) + 2))
    for i, (phase, agent) in enumerate(lanes):
        sub = c[(c["phase"] == phase) & (c["agent"] == agent)]
        for _, x in sub.iterrows():
            start = float(x["t_sent_s"]) - t0
            end = float(x["t_done_s"]) - t0
            first = x["t_first_token_s"]
            ttft_end = (float(first) - t0) if pd.notna(first) else start
            ax.barh(i, ttft_end - start, left=start, color="#ffbb78", edgecolor="black", lw=0.5)
            ax.barh(i, end - ttft_end, left=ttft_end, color="#1f77b4", edgecolor="black", lw=0.5)
    handles = [
        Patch(facecolor="#ffbb78", edgecolor="black", label="waiting for first token"),
        Patch(facecolor="#1f77b4", edgecolor="black", label="streaming tokens"),
    ]
    ax.set_yticks(range(len(lanes)), [f"{p}: {a}" for p, a in lanes], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("Time since the run's first request (s)")
    ax.set_ylabel("Phase: agent")
    ax.set_title(f"{FIGURES['run_timeline']} ({cid}, run {run_index})")
    ax.legend(handles=handles, fontsize=8, loc="lower right")
    _save(fig, path)
    return f"{cid} run {run_index} (efficiency closest to the median)"


def _topology(ctx: dict[str, Any], path: Path) -> str | None:
    runs = ctx["runs"]
    if "topology" not in runs or runs["topology"].nunique(dropna=True) < 2:
        raise Skip("the study has a single topology")
    topo = sorted(runs["topology"].dropna().unique())
    metrics = [m for m in ("seed_efficiency", "true_efficiency") if runs[m].notna().any()]
    fig, ax = plt.subplots(figsize=(max(5, 1.8 * len(topo) * len(metrics)), 4.5))
    data, pos, colors, ticks = [], [], [], []
    for i, t in enumerate(topo):
        for j, m in enumerate(metrics):
            data.append(runs.loc[runs["topology"] == t, m].dropna().to_numpy(float))
            pos.append(i * (len(metrics) + 1) + j)
            colors.append(SEED_COLOR if m == "seed_efficiency" else TRUE_COLOR)
        ticks.append(i * (len(metrics) + 1) + (len(metrics) - 1) / 2)
    bp = ax.boxplot(data, positions=pos, widths=0.7, patch_artist=True)
    for patch, c in zip(bp["boxes"], colors, strict=True):
        patch.set_facecolor(c)
        patch.set_alpha(0.7)
    for m in metrics:
        ax.plot(
            [],
            [],
            color=SEED_COLOR if m == "seed_efficiency" else TRUE_COLOR,
            lw=6,
            alpha=0.7,
            label=_label(m),
        )
    ax.set_xticks(ticks, topo)
    ax.set_xlabel("Topology (servers per agent)")
    ax.set_ylabel("Efficiency (%)")
    ax.set_title(FIGURES["topology_comparison"])
    ax.legend(fontsize=8)
    _save(fig, path)
    return None


_LATENCY_PANELS = (
    ("client_ttft_ms", "TTFT (ms)"),
    ("itl_ms", "inter-token latency (ms)"),
    ("tpot_ms", "time per output token (ms)"),
    ("client_wall_ms", "end-to-end (ms)"),
)


def _latency_values(calls: pd.DataFrame, col: str) -> np.ndarray:
    if col not in calls:
        return np.empty(0)
    if col == "itl_ms":
        parts = [np.asarray(v, dtype=float) for v in calls[col] if v is not None and len(v)]
        x = np.concatenate(parts) if parts else np.empty(0)
    else:
        x = pd.to_numeric(calls[col], errors="coerce").to_numpy(float)
    return x[np.isfinite(x)]


def _latency(ctx: dict[str, Any], path: Path) -> str | None:
    calls = ctx["calls"]
    if calls.empty:
        raise Skip("no per-call records")
    panels = [(c, label) for c, label in _LATENCY_PANELS if len(_latency_values(calls, c))]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4), squeeze=False)
    for ax, (col, label) in zip(axes[0], panels, strict=True):
        for phase, color in (("solo", SEED_COLOR), ("concurrent", TRUE_COLOR)):
            x = np.sort(_latency_values(calls[calls["phase"] == phase], col))
            if len(x):
                ax.step(
                    x, np.arange(1, len(x) + 1) / len(x), where="post", color=color, label=phase
                )
                ax.axvline(np.percentile(x, 99), color=color, lw=0.8, ls=":")
        ax.set_xlabel(label)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("Share of values at or below (ECDF)")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(FIGURES["latency"] + " (dotted: P99)")
    _save(fig, path)
    missing = [label for c, label in _LATENCY_PANELS if (c, label) not in panels]
    return f"not recorded: {', '.join(missing)}" if missing else None


def _scaling_levels(ctx: dict[str, Any]) -> pd.DataFrame:
    """The statistics' S(N) per scaling series; Skip when the study has none."""
    levels = ctx["stats"].scaling
    if levels is None or levels.empty:
        raise Skip("the study has no scaling series (a scenario covering 3 agent counts, 1 too)")
    return levels


def _scaling_axes(n_series: int) -> tuple[plt.Figure, np.ndarray]:
    width = max(7.0, 4.4 * n_series)
    fig, axes = plt.subplots(1, n_series, figsize=(width, 4.4), squeeze=False)
    return fig, axes[0]


def _error_bars(ax: plt.Axes, g: pd.DataFrame, column: str, low: str, high: str) -> None:
    """Means with their 95 % t-interval (no bar where the interval is unknown)."""
    mean = g[column].to_numpy(float)
    below = np.nan_to_num(mean - g[low].to_numpy(float), nan=0.0)
    above = np.nan_to_num(g[high].to_numpy(float) - mean, nan=0.0)
    ax.errorbar(
        g["n_agents"],
        mean,
        yerr=[below, above],
        fmt="o",
        capsize=3,
        color=TRUE_COLOR,
        label="measured (95 % t-interval over runs)",
    )


def _parameter(name: str, value: float) -> str:
    """``s = 0.703``; a bound the fit rests on as what it is (``k = 0``, not ``k = 2.28e-16``)."""
    return f"{name} = 0" if abs(value) < 1e-9 else f"{name} = {value:.3g}"


def _fitted_curves(ax: plt.Axes, fits: pd.DataFrame, n: np.ndarray, per_agent: bool) -> None:
    """The fitted Amdahl and USL curves of one series (left out where a fit gave none)."""
    for law, label, style in (
        (scaling_laws.AMDAHL, "Amdahl", "--"),
        (scaling_laws.USL, "USL", "-."),
    ):
        fit = fits[fits["law"] == law.name]
        if fit.empty or pd.notna(fit.iloc[0]["reason"]):
            continue
        params = [float(fit.iloc[0][p]) for p in ("s", "k")[: len(law.start)]]
        curve = law.curve(n, *params)
        shown = ", ".join(_parameter(p, v) for p, v in zip(("s", "k"), params, strict=False))
        ax.plot(n, 100 * curve / n if per_agent else curve, style, label=f"{label} fit ({shown})")


def _scaling_figure(ctx: dict[str, Any], path: Path, per_agent: bool) -> str | None:
    levels = _scaling_levels(ctx)
    fits = ctx["stats"].scaling_fits
    series = sorted(levels["scenario"].unique())
    fig, axes = _scaling_axes(len(series))
    for ax, name in zip(axes, series, strict=True):
        g = levels[levels["scenario"] == name].sort_values("n_agents")
        n = np.linspace(1, float(g["n_agents"].max()), 200)
        if per_agent:
            _error_bars(ax, g, "efficiency_pct", "efficiency_ci_low", "efficiency_ci_high")
            ax.axhline(100, color="black", lw=0.8, ls=":", label="ideal (100 %)")
            ax.set_ylabel("eta(N) = 100 S(N) / N (%)")
        else:
            _error_bars(ax, g, "speedup", "speedup_ci_low", "speedup_ci_high")
            ax.plot(n, n, color="black", lw=0.8, ls=":", label="ideal (S = N)")
            ax.set_ylabel("S(N), true speedup (x)")
        _fitted_curves(ax, fits[fits["scenario"] == name], n, per_agent)
        ax.set_xticks(g["n_agents"].astype(int).tolist())
        ax.set_xlabel("Agents N")
        ax.set_title(str(name))
        ax.legend(fontsize=7)
    fig.suptitle(FIGURES["scaling_efficiency" if per_agent else "scaling_speedup"])
    _save(fig, path)
    return None


def _scaling_speedup(ctx: dict[str, Any], path: Path) -> str | None:
    return _scaling_figure(ctx, path, per_agent=False)


def _scaling_efficiency(ctx: dict[str, Any], path: Path) -> str | None:
    return _scaling_figure(ctx, path, per_agent=True)


_DRAW: dict[str, Callable[[dict[str, Any], Path], str | None]] = {
    "efficiency_distribution": _efficiency_distribution,
    "config_efficiency": _config_efficiency,
    "speedup_by_scenario": _speedup_by_scenario,
    "seed_vs_true": _seed_vs_true,
    "ttft_split": _ttft_split,
    "agent_throughput": _agent_throughput,
    "slowdown": _slowdown,
    "run_timeline": _run_timeline,
    "topology_comparison": _topology,
    "latency": _latency,
    "scaling_speedup": _scaling_speedup,
    "scaling_efficiency": _scaling_efficiency,
}


def make_figures(
    runs: pd.DataFrame,
    agents: pd.DataFrame,
    calls: pd.DataFrame,
    stats: Statistics,
    out_dir: str | Path,
) -> list[Path]:
    """Draw every figure whose data exists into ``out_dir``; returns the PNGs written.

    Also writes ``out_dir/figures.json``: for each figure its name, title, status
    (made/skipped), file (made only) and a note or the reason it was skipped.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs, agents, calls = prepare(runs, agents, calls)
    ctx = {"runs": runs, "agents": agents, "calls": calls, "stats": stats}
    made: list[Path] = []
    manifest = []
    with plt.rc_context({"font.size": 9}):
        for name, title in FIGURES.items():
            path = out / f"{name}.png"
            entry: dict[str, Any] = {"name": name, "title": title}
            try:
                note = _DRAW[name](ctx, path)
            except Skip as exc:
                plt.close("all")
                path.unlink(missing_ok=True)
                entry.update(status="skipped", file=None, note=str(exc))
            else:
                made.append(path)
                entry.update(status="made", file=path.name, note=note)
            manifest.append(entry)
    write_manifest(out, manifest)
    return made


def run(
    tables: str | Path | dict[str, str | Path], stats_dir: str | Path, out_dir: str | Path
) -> list[Path]:
    """Tables and statistics files in, figures out: what the pipeline's figures rule calls."""
    t = read_tables(tables)
    return make_figures(t["runs"], t["agents"], t["calls"], load_statistics(stats_dir), out_dir)


__all__ = ["FIGURES", "make_figures", "read_manifest", "run", "timeline_run"]
