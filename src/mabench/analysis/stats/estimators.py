"""Estimators: pure functions on arrays of values, each testable on its own.

- descriptive: n, mean, median, sample std (ddof 1), CV = 100 std / mean (only when every
  value is positive), min, max and percentiles P5/P25/P50/P75/P95 (numpy's linear
  interpolation);
- CI of the mean: percentile bootstrap, ``resamples`` resamples, seeded from the settings and
  the group's name (so one group's CI does not depend on which other groups exist);
  from ``normal_from_n`` values on (setting, default 1,000), the normal approximation
  mean ± z·s/√n that the bootstrap converges to, at O(n) cost; null when n < 2;
- proportions: Wilson score interval (95 %);
- two-sample tests: two-sided Mann-Whitney U and Welch's t; Holm's correction; effect size
  Cliff's delta;
- outliers: IQR fences (Q1 - 1.5 IQR, Q3 + 1.5 IQR).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

Z95 = 1.959963984540054

PERCENTILES = (5, 25, 50, 75, 95)

WILCOXON_MIN_N = 6

#: bootstrap indices drawn at a time (8 MB of int64): memory stays bounded whatever the
#: sample size, instead of resamples x n (1.3 GB for 80,000 values)
BOOTSTRAP_BLOCK_VALUES = 2**20

#: values from which a CI of the mean is the normal approximation (settings' default)
NORMAL_FROM_N = 1000


def _values(x: Iterable[Any]) -> np.ndarray:
    """Finite float values of x (None, NaN and non-numbers dropped)."""
    if isinstance(x, np.ndarray) and x.dtype.kind == "f":
        arr = x
    elif isinstance(x, pd.Series) and x.dtype.kind in "fiu":
        arr = x.to_numpy(dtype=float, na_value=np.nan)
    else:
        series = pd.Series(list(x), dtype="object")
        arr = pd.to_numeric(series, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    return arr[np.isfinite(arr)]


def group_rng(seed: int, key: str) -> np.random.Generator:
    """A generator seeded from the study seed and a group's name."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(key.encode())])


def bootstrap_ci(
    values: Iterable[Any],
    resamples: int = 2000,
    seed: int = 12345,
    key: str = "",
    level: float = 0.95,
    normal_from_n: int = NORMAL_FROM_N,
) -> tuple[float | None, float | None]:
    """CI of the mean; (None, None) when fewer than 2 values.

    Below ``normal_from_n`` values: the percentile bootstrap, ``resamples`` resamples from
    :func:`group_rng`, drawn in blocks of at most :data:`BOOTSTRAP_BLOCK_VALUES` indices (the
    generator yields the same numbers in the same order, so the CI is the one a single
    ``resamples x n`` draw gives, in bounded memory). From ``normal_from_n``
    values on: mean ± z·s/√n (s the sample standard deviation), the interval the percentile
    bootstrap converges to for large n; it differs from a bootstrap by about the bootstrap's
    own Monte Carlo error, and costs O(n) instead of ``resamples x n``.
    """
    x = _values(values)
    n = len(x)
    if n < 2:
        return None, None
    if np.all(x == x[0]):
        return float(x[0]), float(x[0])
    alpha = (1 - level) / 2
    if n >= normal_from_n:
        z = Z95 if level == 0.95 else float(sps.norm.ppf(1 - alpha))
        mean = float(x.mean())
        half = z * float(x.std(ddof=1)) / math.sqrt(n)
        return mean - half, mean + half
    rng = group_rng(seed, key)
    resamples = int(resamples)
    means = np.empty(resamples)
    block = max(1, BOOTSTRAP_BLOCK_VALUES // n)
    for lo in range(0, resamples, block):
        hi = min(lo + block, resamples)
        means[lo:hi] = x[rng.integers(0, n, size=(hi - lo, n))].mean(axis=1)
    q_lo, q_hi = np.quantile(means, [alpha, 1 - alpha])
    return float(q_lo), float(q_hi)


def describe(
    values: Iterable[Any],
    resamples: int = 2000,
    seed: int = 12345,
    key: str = "",
    normal_from_n: int = NORMAL_FROM_N,
) -> dict[str, Any]:
    """n, mean, median, std, cv, min, max, p5..p95, ci_low, ci_high (None where undefined)."""
    x = _values(values)
    n = len(x)
    out: dict[str, Any] = {"n": n}
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
    out["ci_low"], out["ci_high"] = bootstrap_ci(
        x, resamples, seed, key, normal_from_n=normal_from_n
    )
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


def iqr_fences(values: Iterable[Any], k: float = 1.5) -> dict[str, float] | None:
    x = _values(values)
    if len(x) < 4:
        return None
    q1, q3 = np.percentile(x, [25, 75])
    iqr = q3 - q1
    return {"q1": float(q1), "q3": float(q3), "lower": q1 - k * iqr, "upper": q3 + k * iqr}


def compare_two(a: Iterable[Any], b: Iterable[Any]) -> dict[str, Any]:
    """Mann-Whitney U and Welch's t (two-sided) plus Cliff's delta; p null when n < 2."""
    x, y = _values(a), _values(b)
    out: dict[str, Any] = {
        "n_a": len(x),
        "n_b": len(y),
        "mean_a": float(x.mean()) if len(x) else None,
        "mean_b": float(y.mean()) if len(y) else None,
        "median_a": float(np.median(x)) if len(x) else None,
        "median_b": float(np.median(y)) if len(y) else None,
        "mw_u": None,
        "mw_p": None,
        "welch_t": None,
        "welch_p": None,
    }
    if len(x) >= 2 and len(y) >= 2:
        if np.ptp(np.concatenate([x, y])) > 0:
            mw = sps.mannwhitneyu(x, y, alternative="two-sided")
            out["mw_u"], out["mw_p"] = float(mw.statistic), float(mw.pvalue)
        else:
            out["mw_u"], out["mw_p"] = float(len(x) * len(y) / 2), 1.0
        if x.std(ddof=1) > 0 or y.std(ddof=1) > 0:
            w = sps.ttest_ind(x, y, equal_var=False)
            out["welch_t"], out["welch_p"] = float(w.statistic), float(w.pvalue)
    out["cliffs_delta"] = cliffs_delta(x, y)
    out["magnitude"] = cliffs_magnitude(out["cliffs_delta"])
    return out
