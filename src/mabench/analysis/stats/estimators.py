"""Estimators: pure functions on arrays of values, each testable on its own.

- descriptive: n, mean, median, sample std (ddof 1), CV = 100 std / mean (only when every
  value is positive), min, max and percentiles P5/P25/P50/P75/P95; tail percentiles
  P50/P90/P95/P99 and max (numpy's linear interpolation);
- CI of a mean: Student's t-interval, mean ± t(n - 1) s / √n, null when n < 2. Its coverage
  is exact on normal data at every n and is measured by simulation on skewed data
  (:func:`t_coverage`), so the report states it instead of promising 95 %;
- several groups (configs): the interval *conditional on the groups studied* (runs are
  independent replicates within a group: grand mean ± t(N - G) s_w / √N with s_w the pooled
  within-group standard deviation), and the interval that treats the groups as a sample
  (the t-interval of the group means, G - 1 degrees of freedom); a slope with a fixed
  effect per group (:func:`within_slope`: order effects, drift over time);
- differences: Welch's t-interval and test of a - b, the paired t-interval and test and the
  exact Wilcoxon signed-rank test of paired differences, Mann-Whitney U; Holm's correction;
  effect size Cliff's delta;
- proportions: Wilson score interval (95 %); over configs, the t-interval of the configs'
  rates, its coverage simulated (:func:`rate_t_coverage`);
- tail quantiles: the order-statistic lower bound of a quantile (:func:`quantile_lower_bound`);
- rank agreement: Spearman's rho with a bootstrap interval over units (:func:`spearman_bootstrap`);
- outliers: IQR fences (Q1 - 1.5 IQR, Q3 + 1.5 IQR).

Values that are not finite numbers (null, NaN, ±inf, non-numbers) are left out of every
statistic; :func:`finite_values` says how many.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

Z95 = 1.959963984540054
LEVEL = 0.95
PERCENTILES = (5, 25, 50, 75, 95)
TAIL_PERCENTILES = (50, 90, 95, 99)
#: simulated samples per coverage figure (Monte Carlo standard error 0.15 pp at 95 %)
COVERAGE_SIMULATIONS = 20_000
COVERAGE_SEED = 20_260_105
#: the skewed distribution the coverage is measured on: lognormal with this sigma of the log
LOGNORMAL_SIGMA = 1.0
#: resamples of a bootstrap interval, and the seed that makes it reproducible
BOOTSTRAP_RESAMPLES = 4_000
BOOTSTRAP_SEED = 20_261_207


def finite_values(x: Iterable[Any]) -> tuple[np.ndarray, int]:
    """The finite float values of x and how many entries were dropped (null, NaN, ±inf or not
    a number)."""
    if isinstance(x, np.ndarray) and x.dtype.kind == "f":
        arr = x
    elif isinstance(x, pd.Series) and x.dtype.kind in "fiu":
        arr = x.to_numpy(dtype=float, na_value=np.nan)
    else:
        series = pd.Series(list(x), dtype="object")
        arr = pd.to_numeric(series, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    keep = np.isfinite(arr)
    return arr[keep], int(len(arr) - keep.sum())


def _values(x: Iterable[Any]) -> np.ndarray:
    """Finite float values of x (None, NaN, ±inf and non-numbers dropped)."""
    return finite_values(x)[0]


# ---------------------------------------------------------------------------------------------
# Intervals of a mean
# ---------------------------------------------------------------------------------------------


def t_half_width(sd: Any, n: Any, level: float = LEVEL) -> Any:
    """Half-width of the t-interval of a mean, t(n - 1) quantile x sd / √n (arrays welcome)."""
    n = np.asarray(n, dtype=float)
    q = sps.t.ppf(0.5 + level / 2, n - 1)
    return q * np.asarray(sd, dtype=float) / np.sqrt(n)


def t_interval(values: Iterable[Any], level: float = LEVEL) -> tuple[float | None, float | None]:
    """Student's t-interval of the mean; (None, None) below 2 values."""
    x = _values(values)
    n = len(x)
    if n < 2:
        return None, None
    mean, sd = float(x.mean()), float(x.std(ddof=1))
    half = float(t_half_width(sd, n, level))
    return mean - half, mean + half


def conditional_interval(
    values: Sequence[float] | np.ndarray, groups: Sequence[Any] | np.ndarray, level: float = LEVEL
) -> dict[str, Any]:
    """The mean of all values and its interval conditional on the groups studied.

    Within each group the values are independent replicates; the groups are fixed (the
    configs of the study), so only the within-group spread counts: mean ± t(N - G) s_w / √N,
    s_w² = Σ (x - group mean)² / (N - G). One group: the plain t-interval. Null when there is
    no replicate (N = G). ``t`` and ``p``: the two-sided test of a zero mean on the same
    standard error (for differences). ``values`` must be finite (see :func:`finite_values`).
    """
    x = np.asarray(values, dtype=float)
    codes, uniq = pd.factorize(pd.Series(groups), sort=False)
    n, g = len(x), len(uniq)
    out: dict[str, Any] = {"n": n, "n_groups": g, "mean": float(x.mean()) if n else None}
    out.update(low=None, high=None, df=None, se=None, t=None, p=None)
    if n - g < 1:
        return out
    sums = np.bincount(codes, weights=x, minlength=g)
    counts = np.bincount(codes, minlength=g)
    resid = x - (sums / counts)[codes]
    df = n - g
    se = math.sqrt(float(resid @ resid) / df) / math.sqrt(n)
    half = float(sps.t.ppf(0.5 + level / 2, df)) * se
    out.update(low=out["mean"] - half, high=out["mean"] + half, df=df, se=se)
    if se > 0:
        out["t"] = out["mean"] / se
        out["p"] = float(2 * sps.t.sf(abs(out["t"]), df))
    return out


def group_means(values: Sequence[float] | np.ndarray, groups: Sequence[Any] | np.ndarray) -> Any:
    """The mean of each group, in order of first appearance (a float array)."""
    x = np.asarray(values, dtype=float)
    codes, uniq = pd.factorize(pd.Series(groups), sort=False)
    return np.bincount(codes, weights=x, minlength=len(uniq)) / np.bincount(
        codes, minlength=len(uniq)
    )


def icc_oneway(values: Sequence[float] | np.ndarray, groups: Sequence[Any] | np.ndarray) -> Any:
    """ICC(1), the share of the variance between groups: (MSB - MSW) / (MSB + (k0 - 1) MSW)
    from the one-way ANOVA, k0 the size of a group adjusted for unequal sizes; None with fewer
    than 2 groups or no replicate."""
    x = np.asarray(values, dtype=float)
    codes, uniq = pd.factorize(pd.Series(groups), sort=False)
    n, g = len(x), len(uniq)
    if g < 2 or n - g < 1:
        return None
    counts = np.bincount(codes, minlength=g).astype(float)
    means = np.bincount(codes, weights=x, minlength=g) / counts
    msb = float(counts @ (means - x.mean()) ** 2) / (g - 1)
    msw = float(((x - means[codes]) ** 2).sum()) / (n - g)
    k0 = (n - float(counts @ counts) / n) / (g - 1)
    denom = msb + (k0 - 1) * msw
    return None if denom == 0 else (msb - msw) / denom


def within_slope(
    values: Sequence[float] | np.ndarray,
    x: Sequence[float] | np.ndarray,
    groups: Sequence[Any] | np.ndarray,
    level: float = LEVEL,
) -> dict[str, Any]:
    """The slope of values on x with a fixed effect per group (the within estimator).

    Values and x are centred on their group means, so only the variation inside each group
    counts: slope = Σ x̃ỹ / Σ x̃², its standard error √(s² / Σ x̃²) with s² the residual
    variance on N - G - 1 degrees of freedom, and its t-interval and two-sided test. The same
    as OLS of y on x and one dummy per group. With x a 0/1 indicator and one group it is the
    difference of the two subgroups' means on their pooled standard deviation. ``slope`` is
    null when x does not vary inside any group; the interval when no degree of freedom is left
    (N - G - 1 < 1). Inputs must be finite (see :func:`finite_values`).
    """
    y, xs = np.asarray(values, dtype=float), np.asarray(x, dtype=float)
    codes, uniq = pd.factorize(pd.Series(groups), sort=False)
    n, g = len(y), len(uniq)
    out: dict[str, Any] = {"n": n, "n_groups": g, "slope": None, "low": None, "high": None}
    out.update(se=None, df=None, t=None, p=None)
    if n == 0:
        return out
    counts = np.bincount(codes, minlength=g)
    xc = xs - (np.bincount(codes, weights=xs, minlength=g) / counts)[codes]
    yc = y - (np.bincount(codes, weights=y, minlength=g) / counts)[codes]
    sxx = float(xc @ xc)
    if sxx <= 1e-12 * max(1.0, float(xs @ xs)):
        return out
    slope = float(xc @ yc) / sxx
    out["slope"] = slope
    df = n - g - 1
    if df < 1:
        return out
    resid = yc - slope * xc
    se = math.sqrt(float(resid @ resid) / df / sxx)
    half = float(sps.t.ppf(0.5 + level / 2, df)) * se
    out.update(low=slope - half, high=slope + half, se=se, df=df)
    if se > 0:
        out["t"] = slope / se
        out["p"] = float(2 * sps.t.sf(abs(out["t"]), df))
    return out


def group_means_interval(
    values: Sequence[float] | np.ndarray, groups: Sequence[Any] | np.ndarray, level: float = LEVEL
) -> dict[str, Any]:
    """The groups as a sample of possible groups: t-interval of the group means (G - 1 df)."""
    means = group_means(values, groups) if len(values) else np.empty(0)
    lo, hi = t_interval(means, level)
    return {
        "n_groups": len(means),
        "mean": float(means.mean()) if len(means) else None,
        "low": lo,
        "high": hi,
    }


def t_coverage(
    n: int,
    distribution: str = "normal",
    simulations: int = COVERAGE_SIMULATIONS,
    seed: int = COVERAGE_SEED,
    level: float = LEVEL,
) -> float:
    """Share (%) of simulated samples of size n whose :func:`t_half_width` interval holds the
    true mean: ``normal`` (N(0, 1)) or ``lognormal`` (sigma :data:`LOGNORMAL_SIGMA`)."""
    rng = np.random.default_rng([seed, n])
    if distribution == "normal":
        x, mu = rng.standard_normal((simulations, n)), 0.0
    elif distribution == "lognormal":
        x = rng.lognormal(0.0, LOGNORMAL_SIGMA, (simulations, n))
        mu = math.exp(LOGNORMAL_SIGMA**2 / 2)
    else:
        raise ValueError(f"unknown distribution {distribution!r} (normal or lognormal)")
    half = t_half_width(x.std(axis=1, ddof=1), n, level)
    return 100.0 * float(np.mean(np.abs(x.mean(axis=1) - mu) <= half))


#: the spread of the configs' true rates in :func:`rate_t_coverage`: Beta with this a + b
RATE_CONCENTRATION = 10.0


def rate_t_coverage(
    n_groups: int,
    per_group: int,
    rate: float,
    simulations: int = COVERAGE_SIMULATIONS,
    seed: int = COVERAGE_SEED,
    level: float = LEVEL,
) -> float | None:
    """Share (%) of simulated studies whose t-interval of the group rates (the configs' shares
    of flagged runs, G - 1 df) holds the mean true rate. Each of ``n_groups`` configs has a
    true rate drawn from Beta(rate c, (1 - rate) c), c = :data:`RATE_CONCENTRATION`, and
    ``per_group`` runs each flagged with that rate. None below 2 groups or 1 run a group."""
    if n_groups < 2 or per_group < 1 or not 0 < rate < 1:
        return None
    rng = np.random.default_rng([seed, n_groups, per_group, round(1000 * rate)])
    a, b = rate * RATE_CONCENTRATION, (1 - rate) * RATE_CONCENTRATION
    true = rng.beta(a, b, (simulations, n_groups))
    rates = rng.binomial(per_group, true) / per_group
    half = t_half_width(rates.std(axis=1, ddof=1), n_groups, level)
    return 100.0 * float(np.mean(np.abs(rates.mean(axis=1) - rate) <= half))


# ---------------------------------------------------------------------------------------------
# Descriptive statistics
# ---------------------------------------------------------------------------------------------


def describe(values: Iterable[Any], level: float = LEVEL) -> dict[str, Any]:
    """n, n_dropped, mean, median, std, cv, min, max, p5..p95, ci_low, ci_high (t-interval);
    None where undefined."""
    x, dropped = finite_values(values)
    n = len(x)
    out: dict[str, Any] = {"n": n, "n_dropped": dropped}
    if n == 0:
        for k in ("mean", "median", "std", "cv", "min", "max", "ci_low", "ci_high"):
            out[k] = None
        for p in PERCENTILES:
            out[f"p{p}"] = None
        return out
    mean = float(x.mean())
    std = float(x.std(ddof=1)) if n > 1 else None
    out.update(
        mean=mean,
        median=float(np.median(x)),
        std=std,
        # CV only on a ratio scale: undefined when values can be zero or negative (deltas).
        cv=None if std is None or x.min() <= 0 else 100.0 * std / mean,
        min=float(x.min()),
        max=float(x.max()),
    )
    for p, v in zip(PERCENTILES, np.percentile(x, PERCENTILES), strict=True):
        out[f"p{p}"] = float(v)
    out["ci_low"], out["ci_high"] = t_interval(x, level)
    return out


def tail(values: Iterable[Any]) -> dict[str, Any]:
    """n, n_dropped, mean, P50, P90, P95, P99 and max (None when there are no values)."""
    x, dropped = finite_values(values)
    out: dict[str, Any] = {"n": len(x), "n_dropped": dropped}
    if not len(x):
        return {**out, "mean": None, **{f"p{p}": None for p in TAIL_PERCENTILES}, "max": None}
    out["mean"] = float(x.mean())
    for p, v in zip(TAIL_PERCENTILES, np.percentile(x, TAIL_PERCENTILES), strict=True):
        out[f"p{p}"] = float(v)
    out["max"] = float(x.max())
    return out


def quantile_lower_bound(
    values: Iterable[Any], p: float = 0.99, level: float = LEVEL
) -> tuple[float | None, int | None]:
    """A distribution-free lower confidence bound of the p-quantile: the k-th smallest value,
    k the largest rank with P(Binomial(n, p) >= k) >= level (the k-th order statistic lies at
    or below the quantile exactly when at least k values do). Returns (value, k); (None, None)
    without values. No upper bound exists below n = log(1 - level) / log(p) values (299 for a
    95 % bound on P99): even the maximum lies above the P99 less often than that."""
    x = np.sort(_values(values))
    n = len(x)
    if not n:
        return None, None
    ranks = np.arange(1, n + 1)
    ok = ranks[sps.binom.sf(ranks - 1, n, p) >= level]
    if not len(ok):
        return None, None
    k = int(ok.max())
    return float(x[k - 1]), k


def _spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's rho of each row pair (average ranks for ties); NaN where a row is constant."""
    rx, ry = sps.rankdata(x, axis=1), sps.rankdata(y, axis=1)
    rx -= rx.mean(axis=1, keepdims=True)
    ry -= ry.mean(axis=1, keepdims=True)
    denom = np.sqrt((rx * rx).sum(axis=1) * (ry * ry).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (rx * ry).sum(axis=1) / denom, np.nan)


def spearman_bootstrap(
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    level: float = LEVEL,
) -> dict[str, Any]:
    """Spearman's rank correlation of paired values (one pair per unit: a config's two means)
    and its percentile bootstrap interval over units drawn with replacement (resamples whose
    ranks are all tied are dropped). Null below 3 units or when a side is constant."""
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    out: dict[str, Any] = {"n": len(a), "rho": None, "low": None, "high": None, "resamples": 0}
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return out
    out["rho"] = float(_spearman_rows(a[None, :], b[None, :])[0])
    idx = np.random.default_rng([seed, len(a)]).integers(0, len(a), (resamples, len(a)))
    rhos = _spearman_rows(a[idx], b[idx])
    rhos = rhos[np.isfinite(rhos)]
    if len(rhos):
        tail_pct = 50 * (1 - level)
        out["low"], out["high"] = (
            float(v) for v in np.percentile(rhos, [tail_pct, 100 - tail_pct])
        )
        out["resamples"] = len(rhos)
    return out


def wilson_ci(k: int, n: int, z: float = Z95) -> tuple[float | None, float | None]:
    """Wilson score interval for k successes out of n (as proportions in [0, 1])."""
    if n <= 0:
        return None, None
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def iqr_fences(values: Iterable[Any], k: float = 1.5) -> dict[str, float] | None:
    x = _values(values)
    if len(x) < 4:
        return None
    q1, q3 = np.percentile(x, [25, 75])
    iqr = q3 - q1
    return {"q1": float(q1), "q3": float(q3), "lower": q1 - k * iqr, "upper": q3 + k * iqr}


# ---------------------------------------------------------------------------------------------
# Tests of differences
# ---------------------------------------------------------------------------------------------


def holm(pvalues: Iterable[float | None]) -> list[float | None]:
    """Holm-Bonferroni adjusted p-values (missing p-values stay missing, not counted)."""
    p = [None if v is None or not np.isfinite(v) else float(v) for v in pvalues]
    present = [(v, i) for i, v in enumerate(p) if v is not None]
    m = len(present)
    adjusted: list[float | None] = [None] * len(p)
    running = 0.0
    for rank, (v, i) in enumerate(sorted(present)):
        running = max(running, min(1.0, (m - rank) * v))
        adjusted[i] = running
    return adjusted


def cliffs_delta(x: Iterable[Any], y: Iterable[Any]) -> float | None:
    """Cliff's delta: P(X > Y) - P(X < Y) over all pairs.

    Counted, for every x, as the y below it minus the y above it in the sorted y: exact, in
    O((n + m) log m) time and O(n + m) memory (no n x m matrix of pairs).
    """
    a, b = _values(x), np.sort(_values(y))
    if len(a) == 0 or len(b) == 0:
        return None
    below = np.searchsorted(b, a, side="left").sum(dtype=np.int64)
    above = (len(b) - np.searchsorted(b, a, side="right")).sum(dtype=np.int64)
    return float((below - above) / (len(a) * len(b)))


def cliffs_magnitude(delta: float | None) -> str | None:
    """Romano et al. (2006) thresholds: 0.147, 0.33, 0.474."""
    if delta is None:
        return None
    d = abs(delta)
    if d < 0.147:
        return "negligible"
    if d < 0.33:
        return "small"
    if d < 0.474:
        return "medium"
    return "large"


def welch(a: Iterable[Any], b: Iterable[Any], level: float = LEVEL) -> dict[str, Any]:
    """Welch's t-interval and two-sided test of mean(a) - mean(b); null below 2 values a side.

    When neither side varies the difference is exact: its interval is the point, no test."""
    x, y = _values(a), _values(b)
    out: dict[str, Any] = {"diff": None, "diff_low": None, "diff_high": None}
    out.update(welch_t=None, welch_df=None, welch_p=None)
    if len(x) and len(y):
        out["diff"] = float(x.mean() - y.mean())
    if len(x) < 2 or len(y) < 2:
        return out
    if x.std(ddof=1) == 0 and y.std(ddof=1) == 0:
        out["diff_low"] = out["diff_high"] = out["diff"]
        return out
    va, vb = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(x) - 1) + vb**2 / (len(y) - 1))
    half = float(sps.t.ppf(0.5 + level / 2, df)) * se
    t = out["diff"] / se
    out.update(diff_low=out["diff"] - half, diff_high=out["diff"] + half)
    out.update(welch_t=t, welch_df=df, welch_p=float(2 * sps.t.sf(abs(t), df)))
    return out


def mann_whitney(a: Iterable[Any], b: Iterable[Any]) -> dict[str, Any]:
    """Two-sided Mann-Whitney U (exact for small samples without ties) and the smallest p the
    exact test can reach at these sizes (2 / C(n + m, n)); null below 2 values a side."""
    x, y = _values(a), _values(b)
    out: dict[str, Any] = {"mw_u": None, "mw_p": None, "mw_min_p": None}
    if len(x) < 2 or len(y) < 2:
        return out
    out["mw_min_p"] = min(1.0, 2 / math.comb(len(x) + len(y), len(x)))
    if np.ptp(np.concatenate([x, y])) > 0:
        mw = sps.mannwhitneyu(x, y, alternative="two-sided")
        out["mw_u"], out["mw_p"] = float(mw.statistic), float(mw.pvalue)
    else:
        out["mw_u"], out["mw_p"] = float(len(x) * len(y) / 2), 1.0
    return out


def compare_two(a: Iterable[Any], b: Iterable[Any], level: float = LEVEL) -> dict[str, Any]:
    """Two independent samples: sizes, means, medians, Welch's interval and test of a - b,
    Mann-Whitney U and Cliff's delta."""
    x, y = _values(a), _values(b)
    out: dict[str, Any] = {
        "n_a": len(x),
        "n_b": len(y),
        "mean_a": float(x.mean()) if len(x) else None,
        "mean_b": float(y.mean()) if len(y) else None,
        "median_a": float(np.median(x)) if len(x) else None,
        "median_b": float(np.median(y)) if len(y) else None,
        **welch(x, y, level),
        **mann_whitney(x, y),
    }
    out["cliffs_delta"] = cliffs_delta(x, y)
    out["magnitude"] = cliffs_magnitude(out["cliffs_delta"])
    return out


def paired(differences: Iterable[Any], level: float = LEVEL) -> dict[str, Any]:
    """Paired differences: their mean, t-interval and one-sample t test against 0, and the
    exact Wilcoxon signed-rank test (zero differences dropped, Wilcoxon's convention) with
    the smallest p it can reach at this n (2 / 2^n)."""
    d = _values(differences)
    out: dict[str, Any] = {"n": len(d), "mean_diff": float(d.mean()) if len(d) else None}
    out["ci_low"], out["ci_high"] = t_interval(d, level)
    out.update(t=None, t_p=None, wilcoxon_stat=None, wilcoxon_p=None, wilcoxon_min_p=None)
    if len(d) >= 2 and d.std(ddof=1) > 0:
        r = sps.ttest_1samp(d, 0.0)
        out.update(t=float(r.statistic), t_p=float(r.pvalue))
    nonzero = int(np.count_nonzero(d))
    if nonzero >= 1:
        w = sps.wilcoxon(d)
        out.update(wilcoxon_stat=float(w.statistic), wilcoxon_p=float(w.pvalue))
        out["wilcoxon_min_p"] = min(1.0, 2 / 2**nonzero)
    return out
