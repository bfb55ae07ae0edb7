"""Scaling laws: how the true speedup grows with the number of agents, per scaling series.

A *scaling series* is a scenario whose configs cover at least three distinct agent counts N,
N = 1 among them (the reference point: S(1) should be about 1). Scenario names are the study's
own; nothing here knows them. Only the runs that passed every check after their phases count
(as in the headline, :func:`mabench.analysis.stats.validity.passed_every_check`).

Per series and N (:data:`LEVEL_COLUMNS`): S(N), the mean true speedup of the runs, with its
95 % t-interval over runs; eta(N) = 100 S(N) / N with the same interval divided by N; and, for
comparison with TR129, that report's normalisation computed from our agents table: the
per-agent throughput together (``concurrent_eval_count / concurrent_wall_s`` of each agent,
averaged over the run's agents) over the same at N = 1 of the series, and the total throughput
(the run's ``concurrent_eval_count`` summed over its agents / the run's ``concurrent_wall_s``)
over the same at N = 1.

Per series, two laws are fitted to the run-level points (N, S) by nonlinear least squares
(:func:`scipy.optimize.curve_fit`, s in [0, 1], k >= 0): Amdahl, S = N / (1 + s (N - 1)), and
the Universal Scalability Law, S = N / (1 + s (N - 1) + k N (N - 1)). Their parameters get
95 % percentile intervals from :data:`RESAMPLES` seeded bootstrap resamples of the runs, drawn
within each N; each fit states its root-mean-square residual and where another agent stops
helping (:func:`usl_peak`, :func:`first_marginal_below`). A series with fewer than
:data:`MIN_LEVELS` agent counts among its valid runs, or a fit that does not converge, gets a
``reason`` and no number.

:data:`TR129_REFERENCE` holds another report's published numbers, shown beside ours in
``scaling_reference`` as numbers from another machine.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import OptimizeWarning, curve_fit

from mabench.analysis.stats.estimators import t_interval
from mabench.analysis.stats.validity import passed_every_check

#: agent counts a scenario's configs must cover (N = 1 among them) to be a scaling series, and
#: that its valid runs must cover for a fit
MIN_LEVELS = 3
#: a next agent that adds less than this share of one agent's work no longer helps (Amdahl)
MARGINAL_AGENT = 0.1
#: bootstrap resamples per fit (about 0.4 s per series for both laws on a 2-core VM), and the
#: seed that makes the intervals reproducible
RESAMPLES = 100
SEED = 20_261_208
#: the largest N :func:`first_marginal_below` looks at (beyond it: "not within")
MAX_AGENTS_SEARCHED = 100_000
#: k below this is zero: the USL curve has no peak
K_ZERO = 1e-9


@dataclass(frozen=True)
class PublishedScaling:
    """Another report's published scaling numbers (ranges low-high, as that report gives them)."""

    source: str
    machine: str
    #: N -> per-agent efficiency (%): one agent's throughput among N over one agent alone
    per_agent_efficiency_pct: dict[int, tuple[float, float]]
    #: total throughput over one agent's, where it levels off (x)
    total_throughput_ratio: tuple[float, float]
    amdahl_s: tuple[float, float]
    #: what a companion report found about the shape of the curve, in words
    shape: str


#: TR129 (Chimeraforge technical reports, Sahil Kadadekar), as quoted in mabench issue 25: not
#: bundled, not checked against TR129's data. Numbers from another machine.
TR129_REFERENCE = PublishedScaling(
    source="TR129",
    machine="an RTX 4080 laptop GPU with Ollama and 1-3B models, N = 1-8 agents on one Ollama "
    "instance",
    per_agent_efficiency_pct={2: (67.5, 80.0), 4: (34.0, 40.0), 8: (17.0, 20.0)},
    total_throughput_ratio=(1.4, 1.6),
    amdahl_s=(0.39, 0.54),
    shape="TR130 found that Ollama degrades like Amdahl's law while vLLM and TGI follow a "
    "power law",
)

LEVEL_COLUMNS = (
    "scenario",
    "n_agents",
    "n_configs",
    "n_runs",
    "n_left_out",
    "speedup",
    "speedup_ci_low",
    "speedup_ci_high",
    "efficiency_pct",
    "efficiency_ci_low",
    "efficiency_ci_high",
    "per_agent_tps",
    "total_tps",
    "tr129_efficiency_pct",
    "total_throughput_ratio",
    "amdahl_speedup",
    "usl_speedup",
    "reason",
)
FIT_COLUMNS = (
    "scenario",
    "law",
    "n_runs",
    "n_levels",
    "levels",
    "s",
    "s_ci_low",
    "s_ci_high",
    "k",
    "k_ci_low",
    "k_ci_high",
    "rmse",
    "n_peak",
    "n_marginal",
    "resamples",
    "resamples_failed",
    "note",
    "reason",
)
REFERENCE_COLUMNS = (
    "scenario",
    "quantity",
    "n_agents",
    "ours",
    "ours_tr129_style",
    "reference_low",
    "reference_high",
    "reference",
)


# ---------------------------------------------------------------------------------------------
# The two laws
# ---------------------------------------------------------------------------------------------


def amdahl(n: np.ndarray, s: float) -> np.ndarray:
    """Amdahl's law: S(N) = N / (1 + s (N - 1)), s the serial fraction."""
    return n / (1 + s * (n - 1))


def _amdahl_jacobian(n: np.ndarray, s: float) -> np.ndarray:
    return (-n * (n - 1) / (1 + s * (n - 1)) ** 2)[:, None]


def usl(n: np.ndarray, s: float, k: float) -> np.ndarray:
    """The Universal Scalability Law: S(N) = N / (1 + s (N - 1) + k N (N - 1)), s contention,
    k coherency (the cost each agent adds to every other)."""
    return n / (1 + s * (n - 1) + k * n * (n - 1))


def _usl_jacobian(n: np.ndarray, s: float, k: float) -> np.ndarray:
    d2 = (1 + s * (n - 1) + k * n * (n - 1)) ** 2
    return np.column_stack([-n * (n - 1) / d2, -n * n * (n - 1) / d2])


@dataclass(frozen=True)
class Law:
    """A law fitted by :func:`fit_law`: its curve, Jacobian, start and bounds."""

    name: str
    curve: Callable[..., np.ndarray]
    jacobian: Callable[..., np.ndarray]
    start: tuple[float, ...]
    lower: tuple[float, ...]
    upper: tuple[float, ...]


AMDAHL = Law("amdahl", amdahl, _amdahl_jacobian, (0.1,), (0.0,), (1.0,))
USL = Law("usl", usl, _usl_jacobian, (0.1, 0.01), (0.0, 0.0), (1.0, np.inf))
LAWS = (AMDAHL, USL)


class FitFailed(Exception):
    """A least-squares fit that did not converge; the message says why."""


def fit_law(
    law: Law, n: np.ndarray, speedup: np.ndarray, start: tuple[float, ...] | None = None
) -> np.ndarray:
    """The law's parameters by bounded nonlinear least squares on the points (n, speedup)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OptimizeWarning)  # no covariance: we bootstrap
            params, _ = curve_fit(
                law.curve,
                n,
                speedup,
                p0=start or law.start,
                bounds=(law.lower, law.upper),
                jac=law.jacobian,
            )
    except (RuntimeError, ValueError) as exc:
        raise FitFailed(f"{law.name} fit did not converge: {exc}") from exc
    if not np.all(np.isfinite(params)):
        raise FitFailed(f"{law.name} fit did not converge: parameters {params.tolist()}")
    return np.asarray(params, dtype=float)


# ---------------------------------------------------------------------------------------------
# Where another agent stops helping
# ---------------------------------------------------------------------------------------------


def usl_peak(s: float, k: float) -> int | None:
    """The integer N that maximises the USL's S(N): the better of the two integers around
    sqrt((1 - s) / k); None when k is zero (S never falls)."""
    if k <= K_ZERO:
        return None
    root = math.sqrt(max(1 - s, 0.0) / k)
    candidates = np.array(sorted({max(1, math.floor(root)), max(1, math.ceil(root))}), float)
    return int(candidates[int(np.argmax(usl(candidates, s, k)))])


def first_marginal_below(
    curve: Callable[[np.ndarray], np.ndarray], threshold: float = MARGINAL_AGENT
) -> int | None:
    """The first N at which the next agent adds less than ``threshold`` of one agent's work,
    S(N + 1) - S(N) < threshold; None when that does not happen up to
    :data:`MAX_AGENTS_SEARCHED` agents."""
    n = np.arange(1, MAX_AGENTS_SEARCHED + 1, dtype=float)
    gain = np.diff(curve(np.append(n, MAX_AGENTS_SEARCHED + 1.0)))
    below = np.flatnonzero(gain < threshold)
    return int(n[below[0]]) if len(below) else None


# ---------------------------------------------------------------------------------------------
# Fits with bootstrap intervals
# ---------------------------------------------------------------------------------------------


def _resampled(levels: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Row positions of one bootstrap sample: each N's runs drawn with replacement."""
    return np.concatenate([rng.choice(rows, size=len(rows), replace=True) for rows in levels])


def _spread_for_resampling(speedup: np.ndarray, levels: list[np.ndarray]) -> np.ndarray:
    """Each N's runs spread around their mean by sqrt(m / (m - 1)), m the runs at that N: a
    resample of m runs then varies its mean by s^2 / m (the t-interval's variance) instead of
    (m - 1) / m of it, which matters with 3 to 5 runs per N."""
    out = speedup.copy()
    for rows in levels:
        if len(rows) > 1:
            mean = speedup[rows].mean()
            out[rows] = mean + math.sqrt(len(rows) / (len(rows) - 1)) * (speedup[rows] - mean)
    return out


def _bootstrap(
    law: Law, n: np.ndarray, speedup: np.ndarray, start: np.ndarray, resamples: int
) -> tuple[np.ndarray, int]:
    """The law's parameters on ``resamples`` bootstrap samples (rows: the ones that
    converged) and how many did not converge."""
    rng = np.random.default_rng(SEED)
    levels = [np.flatnonzero(n == level) for level in np.unique(n)]
    spread = _spread_for_resampling(speedup, levels)
    found, failed = [], 0
    for _ in range(resamples):
        rows = _resampled(levels, rng)
        try:
            found.append(fit_law(law, n[rows], spread[rows], tuple(start)))
        except FitFailed:
            failed += 1
    return np.array(found).reshape(-1, len(start)), failed


def _limits_note(
    law: Law, params: np.ndarray, largest: float
) -> tuple[int | None, int | None, str | None]:
    """The USL's peak and the first N whose next agent adds < MARGINAL_AGENT of an agent,
    with what they mean where one is missing or lies beyond the agents measured."""
    notes = []
    peak = usl_peak(*params) if law is USL else None
    if law is USL and peak is None:
        notes.append("k = 0: the fitted S(N) never falls, so it has no peak")
    marginal = first_marginal_below(lambda x: law.curve(x, *params))
    if marginal is None:
        notes.append(
            f"every agent up to {MAX_AGENTS_SEARCHED} adds at least {MARGINAL_AGENT:g} of an "
            "agent's work"
        )
    beyond = [
        f"{name} {value} lies beyond the largest N measured ({int(largest)}): an extrapolation"
        for name, value in (("the peak", peak), ("the marginal N", marginal))
        if value is not None and value > largest
    ]
    return peak, marginal, "; ".join(notes + beyond) or None


def fit_row(law: Law, n: np.ndarray, speedup: np.ndarray, resamples: int = RESAMPLES) -> dict:
    """One law fitted to run-level points: parameters with bootstrap intervals, the RMS
    residual, the USL's peak and the first N whose next agent adds too little; a ``reason``
    and no numbers with fewer than :data:`MIN_LEVELS` agent counts or without convergence."""
    levels = np.unique(n)
    row: dict = dict.fromkeys(FIT_COLUMNS)
    row.update(
        law=law.name,
        n_runs=len(n),
        n_levels=len(levels),
        levels=", ".join(str(int(v)) for v in levels),
        resamples=0,
        resamples_failed=0,
    )
    if len(levels) < MIN_LEVELS:
        row["reason"] = (
            f"{len(levels)} agent count(s) among the valid runs with a true speedup "
            f"({row['levels'] or 'none'}): a fit needs at least {MIN_LEVELS}"
        )
        return row
    try:
        params = fit_law(law, n, speedup)
    except FitFailed as exc:
        row["reason"] = str(exc)
        return row
    found, failed = _bootstrap(law, n, speedup, params, resamples)
    row.update(resamples=resamples, resamples_failed=failed)
    for i, name in enumerate(("s", "k")[: len(params)]):
        row[name] = float(params[i])
        if len(found):
            low, high = np.percentile(found[:, i], [2.5, 97.5])
            row[f"{name}_ci_low"], row[f"{name}_ci_high"] = float(low), float(high)
    row["rmse"] = float(np.sqrt(np.mean((law.curve(n, *params) - speedup) ** 2)))
    row["n_peak"], row["n_marginal"], row["note"] = _limits_note(law, params, levels.max())
    return row


# ---------------------------------------------------------------------------------------------
# The series and their points
# ---------------------------------------------------------------------------------------------


def scaling_series(runs: pd.DataFrame) -> list[str]:
    """The scenarios whose configs cover at least :data:`MIN_LEVELS` agent counts, 1 among
    them, sorted."""
    if runs.empty or "n_agents" not in runs:
        return []
    counts = runs.dropna(subset=["n_agents"]).groupby("scenario")["n_agents"].agg(set)
    return sorted(str(s) for s, c in counts.items() if 1 in c and len(c) >= MIN_LEVELS)


def _throughputs(agents: pd.DataFrame) -> pd.DataFrame:
    """Per run: its agents' mean tokens per second each (``concurrent_eval_count /
    concurrent_wall_s``) and their tokens summed (``concurrent_eval_count``)."""
    a = agents[["config_id", "run_index"]].copy()
    tokens = pd.to_numeric(agents["concurrent_eval_count"], errors="coerce").astype(float)
    wall = pd.to_numeric(agents["concurrent_wall_s"], errors="coerce").astype(float)
    a["agent_tps"] = (tokens / wall).where(wall > 0)
    a["tokens"] = tokens
    return a.groupby(["config_id", "run_index"], as_index=False).agg(
        per_agent_tps=("agent_tps", "mean"), tokens=("tokens", lambda t: t.sum(min_count=1))
    )


def scaling_points(runs: pd.DataFrame, agents: pd.DataFrame) -> pd.DataFrame:
    """One row per run of a scaling series: its scenario, N, config, validity, true speedup,
    per-agent and total tokens per second."""
    series = scaling_series(runs)
    columns = ["scenario", "n_agents", "config_id", "run_index", "valid", "true_speedup"]
    picked = (runs["scenario"].isin(series) & runs["n_agents"].notna()).to_numpy()
    points = runs[picked].assign(valid=passed_every_check(runs)[picked])
    points = points[[*columns, "concurrent_wall_s"]].merge(
        _throughputs(agents), on=["config_id", "run_index"], how="left"
    )
    wall = pd.to_numeric(points["concurrent_wall_s"], errors="coerce").astype(float)
    points["total_tps"] = (points["tokens"] / wall).where(wall > 0)
    points["true_speedup"] = pd.to_numeric(points["true_speedup"], errors="coerce").astype(float)
    points["n_agents"] = points["n_agents"].astype(int)
    return points[[*columns, "per_agent_tps", "total_tps"]].reset_index(drop=True)


# ---------------------------------------------------------------------------------------------
# The tables
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scaling:
    """The three tables: per series and N (``levels``), per series and law (``fits``), and
    ours beside TR129's published numbers (``reference``)."""

    levels: pd.DataFrame
    fits: pd.DataFrame
    reference: pd.DataFrame


def _level_row(n: int, g: pd.DataFrame, one: pd.DataFrame) -> dict:
    """S(N) and eta(N) of one N over its valid runs with a true speedup, and the throughput
    ratios over its valid runs (they need no baseline)."""
    valid = g[g["valid"]]
    used = valid[valid["true_speedup"].notna()]
    speedup = used["true_speedup"].to_numpy(float)
    low, high = t_interval(speedup)
    row: dict = {
        "n_agents": n,
        "n_configs": int(g["config_id"].nunique()),
        "n_runs": len(used),
        "n_left_out": len(g) - len(used),
        "speedup": float(speedup.mean()) if len(speedup) else None,
        "speedup_ci_low": low,
        "speedup_ci_high": high,
    }
    for end in ("", "_ci_low", "_ci_high"):
        value = row[f"speedup{end}"]
        row[f"efficiency{end or '_pct'}"] = None if value is None else 100 * value / n
    row["per_agent_tps"] = _mean(valid["per_agent_tps"])
    row["total_tps"] = _mean(valid["total_tps"])
    row["tr129_efficiency_pct"] = _ratio(row["per_agent_tps"], _mean(one["per_agent_tps"]), 100)
    row["total_throughput_ratio"] = _ratio(row["total_tps"], _mean(one["total_tps"]), 1)
    row["reason"] = _level_reason(g, used, one)
    return row


def _level_reason(g: pd.DataFrame, used: pd.DataFrame, one: pd.DataFrame) -> str | None:
    if used.empty:
        flagged = int((~g["valid"]).sum())
        return (
            f"no valid run with a true speedup ({flagged} of {len(g)} flagged by a check, the "
            "others without a baseline)"
        )
    if _mean(one["per_agent_tps"]) is None:
        return "no valid N = 1 run with token counts: the throughput ratios need one"
    return None


def _mean(values: pd.Series) -> float | None:
    x = pd.to_numeric(values, errors="coerce").dropna()
    return float(x.mean()) if len(x) else None


def _ratio(value: float | None, reference: float | None, scale: float) -> float | None:
    if value is None or reference is None or reference <= 0:
        return None
    return scale * value / reference


def _series_levels(scenario: str, points: pd.DataFrame, fits: dict[str, dict]) -> list[dict]:
    one = points[(points["n_agents"] == 1) & points["valid"]]
    rows = []
    for n, g in points.groupby("n_agents", sort=True):
        row = {"scenario": scenario, **_level_row(int(n), g, one)}
        for law in LAWS:
            fit = fits[law.name]
            params = [fit[p] for p in ("s", "k")[: len(law.start)]]
            ok = fit["reason"] is None
            row[f"{law.name}_speedup"] = float(law.curve(np.float64(n), *params)) if ok else None
        rows.append(row)
    return rows


def _tr129_style_amdahl(points: pd.DataFrame) -> float | None:
    """Amdahl's s fitted to the runs' total throughput over the mean at N = 1 (the speedup as
    TR129 normalises it); None where that cannot be fitted."""
    used = points[points["valid"] & points["total_tps"].notna()]
    one = _mean(used.loc[used["n_agents"] == 1, "total_tps"])
    if one is None or one <= 0 or used["n_agents"].nunique() < MIN_LEVELS:
        return None
    try:
        n = used["n_agents"].to_numpy(float)
        return float(fit_law(AMDAHL, n, used["total_tps"].to_numpy(float) / one)[0])
    except FitFailed:
        return None


def _reference_rows(
    scenario: str, levels: pd.DataFrame, fits: dict[str, dict], points: pd.DataFrame
) -> list[dict]:
    """Ours beside TR129's numbers: eta at N = 2, 4, 8; the total throughput ratio at the
    largest N; Amdahl's s (ours fitted to S, and to the TR129-style total throughput ratio)."""
    by_n = levels.set_index("n_agents")
    ref = TR129_REFERENCE
    base = {"scenario": scenario, "reference": ref.source}
    rows = []
    for n, (low, high) in ref.per_agent_efficiency_pct.items():
        here = by_n.loc[n] if n in by_n.index else None
        rows.append(
            {
                **base,
                "quantity": "per-agent efficiency eta(N) (%)",
                "n_agents": n,
                "ours": None if here is None else here["efficiency_pct"],
                "ours_tr129_style": None if here is None else here["tr129_efficiency_pct"],
                "reference_low": low,
                "reference_high": high,
            }
        )
    largest = int(by_n.index.max())
    low, high = ref.total_throughput_ratio
    rows.append(
        {
            **base,
            "quantity": "total throughput over one agent's (x): TR129's where it levels off, "
            "ours at the largest N (first column: S(N))",
            "n_agents": largest,
            "ours": by_n.loc[largest, "speedup"],
            "ours_tr129_style": by_n.loc[largest, "total_throughput_ratio"],
            "reference_low": low,
            "reference_high": high,
        }
    )
    low, high = ref.amdahl_s
    rows.append(
        {
            **base,
            "quantity": "Amdahl serial fraction s",
            "n_agents": None,
            "ours": fits["amdahl"]["s"],
            "ours_tr129_style": _tr129_style_amdahl(points),
            "reference_low": low,
            "reference_high": high,
        }
    )
    return rows


def scaling_tables(runs: pd.DataFrame, agents: pd.DataFrame, resamples: int = RESAMPLES) -> Scaling:
    """The scaling tables of every scaling series (empty tables, with their columns, when the
    study has none)."""
    points = scaling_points(runs, agents)
    level_rows, fit_rows, reference_rows = [], [], []
    for scenario, p in points.groupby("scenario", sort=True):
        used = p[p["valid"] & p["true_speedup"].notna()]
        n, speedup = used["n_agents"].to_numpy(float), used["true_speedup"].to_numpy(float)
        fits = {law.name: fit_row(law, n, speedup, resamples) for law in LAWS}
        fit_rows += [{**fit, "scenario": scenario} for fit in fits.values()]
        levels = _series_levels(str(scenario), p, fits)
        level_rows += levels
        reference_rows += _reference_rows(str(scenario), pd.DataFrame(levels), fits, p)
    return Scaling(
        levels=pd.DataFrame(level_rows, columns=list(LEVEL_COLUMNS)),
        fits=pd.DataFrame(fit_rows, columns=list(FIT_COLUMNS)),
        reference=pd.DataFrame(reference_rows, columns=list(REFERENCE_COLUMNS)),
    )


__all__ = [
    "AMDAHL",
    "LAWS",
    "MARGINAL_AGENT",
    "RESAMPLES",
    "TR129_REFERENCE",
    "USL",
    "FitFailed",
    "Law",
    "PublishedScaling",
    "Scaling",
    "amdahl",
    "first_marginal_below",
    "fit_law",
    "fit_row",
    "scaling_points",
    "scaling_series",
    "scaling_tables",
    "usl",
    "usl_peak",
]
