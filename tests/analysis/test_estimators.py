"""Estimators (pure functions on arrays) against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mabench.analysis.stats import estimators


def test_describe_hand_computed() -> None:
    d = estimators.describe([1, 2, 3, 4, 10], resamples=200, seed=1, key="k")
    assert d["n"] == 5
    assert d["mean"] == 4.0
    assert d["median"] == 3.0
    # sample variance: (9 + 4 + 1 + 0 + 36) / 4 = 12.5
    assert d["std"] == pytest.approx(math.sqrt(12.5))
    assert d["cv"] == pytest.approx(100 * math.sqrt(12.5) / 4)
    assert (d["min"], d["max"]) == (1.0, 10.0)
    # linear interpolation at (n - 1) p: P25 -> index 1 = 2, P75 -> index 3 = 4,
    # P5 -> index 0.2 = 1.2, P95 -> index 3.8 = 4 + 0.8 * 6 = 8.8
    assert d["p25"] == 2.0 and d["p50"] == 3.0 and d["p75"] == 4.0
    assert d["p5"] == pytest.approx(1.2) and d["p95"] == pytest.approx(8.8)
    assert d["ci_low"] <= d["mean"] <= d["ci_high"]
    assert d["ci_low"] >= 1.0 and d["ci_high"] <= 10.0


def test_describe_small_n_and_missing() -> None:
    one = estimators.describe([7.0, None, float("nan")])
    assert one["n"] == 1 and one["mean"] == 7.0
    assert one["std"] is None and one["cv"] is None
    assert one["ci_low"] is None and one["ci_high"] is None
    empty = estimators.describe([None, None])
    assert empty["n"] == 0 and empty["mean"] is None and empty["p95"] is None
    # CV is undefined for a metric that can be negative (a delta)
    assert estimators.describe([-1.0, 1.0, 3.0])["cv"] is None


def test_bootstrap_is_deterministic_per_seed_and_key() -> None:
    x = [1.0, 2.5, 3.0, 7.5, 9.0, 4.0]
    a = estimators.bootstrap_ci(x, 1000, seed=5, key="g")
    assert a == estimators.bootstrap_ci(x, 1000, seed=5, key="g")
    assert a != estimators.bootstrap_ci(x, 1000, seed=6, key="g")
    assert a != estimators.bootstrap_ci(x, 1000, seed=5, key="other")
    assert estimators.bootstrap_ci([3.0, 3.0, 3.0]) == (3.0, 3.0)
    assert estimators.bootstrap_ci([3.0]) == (None, None)
    # the percentile bootstrap of the mean by hand, same generator
    rng = estimators.group_rng(5, "g")
    arr = np.array(x)
    means = arr[rng.integers(0, len(arr), size=(1000, len(arr)))].mean(axis=1)
    assert a == pytest.approx(tuple(np.quantile(means, [0.025, 0.975])))


@pytest.mark.parametrize("n", [2, 7, 300, 999])
def test_bootstrap_below_normal_from_n_is_the_one_matrix_bootstrap(n: int) -> None:
    # drawn in blocks, the CI equals the one from a single resamples x n index matrix
    x = np.random.default_rng(n).lognormal(3, 1, n)
    rng = estimators.group_rng(11, "k")
    means = x[rng.integers(0, n, size=(2000, n))].mean(axis=1)
    alpha = (1 - 0.95) / 2  # as the library computes it (not exactly 0.025)
    expected = tuple(float(q) for q in np.quantile(means, [alpha, 1 - alpha]))
    assert estimators.bootstrap_ci(x, 2000, seed=11, key="k") == expected
    assert estimators.bootstrap_ci(x, 2000, seed=11, key="k", normal_from_n=n + 1) == expected


def test_bootstrap_from_normal_from_n_is_the_normal_interval() -> None:
    x = np.random.default_rng(1).normal(50, 5, 1500)
    half = estimators.Z95 * x.std(ddof=1) / np.sqrt(len(x))
    lo, hi = estimators.bootstrap_ci(x, 2000, seed=11, key="k")
    assert (lo, hi) == pytest.approx((x.mean() - half, x.mean() + half), rel=1e-12)
    # and it is where the bootstrap lands, within the bootstrap's Monte Carlo error
    blo, bhi = estimators.bootstrap_ci(x, 2000, seed=11, key="k", normal_from_n=len(x) + 1)
    assert abs(blo - lo) < 0.15 * half and abs(bhi - hi) < 0.15 * half
    assert estimators.bootstrap_ci(x, normal_from_n=len(x))[0] == pytest.approx(lo, rel=1e-12)


def test_wilson_known_values() -> None:
    lo, hi = estimators.wilson_ci(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.27753, abs=1e-5)
    lo, hi = estimators.wilson_ci(5, 10)
    assert lo == pytest.approx(0.23659, abs=1e-5) and hi == pytest.approx(0.76341, abs=1e-5)
    lo, hi = estimators.wilson_ci(17, 150)
    assert lo == pytest.approx(0.071974, abs=1e-5) and hi == pytest.approx(0.174003, abs=1e-5)
    assert estimators.wilson_ci(0, 0) == (None, None)


def test_holm_known_values() -> None:
    # sorted 0.01, 0.03, 0.04 -> 3 * 0.01, max(0.03, 2 * 0.03), max(0.06, 1 * 0.04)
    assert estimators.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert estimators.holm([0.5, None, 0.9]) == [pytest.approx(1.0), None, pytest.approx(1.0)]
    assert estimators.holm([0.2, 0.01]) == pytest.approx([0.2, 0.02])


def test_cliffs_delta_hand_computed() -> None:
    # 9 pairs: x > y once (3 > 2), x < y six times, two ties -> (1 - 6) / 9
    assert estimators.cliffs_delta([1, 2, 3], [2, 3, 4]) == pytest.approx(-5 / 9)
    assert estimators.cliffs_delta([5, 6], [1, 2]) == 1.0
    assert estimators.cliffs_magnitude(-5 / 9) == "large"
    assert estimators.cliffs_magnitude(0.2) == "small"
    assert estimators.cliffs_magnitude(0.1) == "negligible"
    assert estimators.cliffs_magnitude(0.4) == "medium"
    assert estimators.cliffs_delta([], [1]) is None


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cliffs_delta_equals_the_pairwise_definition(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 20, 300).astype(float)  # many ties
    y = np.append(rng.integers(5, 25, 170).astype(float), [np.nan, np.inf])
    finite = y[np.isfinite(y)]
    pairwise = float(np.sign(x[:, None] - finite[None, :]).mean())
    assert estimators.cliffs_delta(x, y) == pairwise


def test_iqr_fences_and_mann_whitney() -> None:
    f = estimators.iqr_fences([1, 2, 3, 4, 100])
    assert (f["q1"], f["q3"], f["lower"], f["upper"]) == (2.0, 4.0, -1.0, 7.0)
    assert estimators.iqr_fences([1, 2, 3]) is None
    c = estimators.compare_two([1, 2, 3], [4, 5, 6])
    assert c["mw_u"] == 0.0
    assert c["mw_p"] == pytest.approx(0.1)  # exact: 2 of 20 arrangements are as extreme
    assert c["cliffs_delta"] == -1.0
    assert c["welch_t"] == pytest.approx(-3 / math.sqrt(2 / 3))
    single = estimators.compare_two([1.0], [2.0, 3.0])
    assert single["mw_p"] is None and single["welch_p"] is None
