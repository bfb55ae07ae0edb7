"""Experimental replacement for ``mabench.stats.bootstrap_ci``, to measure the proposed fix.

The library's percentile bootstrap draws one ``resamples × n`` index matrix (int64) per call:
2000 × n × 8 bytes, i.e. 1.3 GB for the 80,000 calls of a 10k-run study and 13 GB at 100k
runs, and gathers as many values; it is called for every metric of every group, the
``overall`` groups of the calls table included. That is most of ``compute_statistics``'s
time and all of its memory at scale.

The proposal, applied here by patching the module attribute (``describe`` and the other
callers look it up at call time):

* below ``EXACT_MAX_N`` values: the library's bootstrap, drawing the same random numbers but
  in blocks of ``BLOCK`` resamples (a Generator fills arrays in order, so the means and the
  CI are identical) -- memory ``BLOCK × n`` instead of ``resamples × n``;
* from ``EXACT_MAX_N`` values on: the normal-approximation CI of the mean, mean ± z·s/√n,
  which is what the percentile bootstrap converges to for large n (the difference is
  reported by the benchmark), at O(n) cost.

And, each the same result computed without a Python loop over rows or an n × m matrix:
``cliffs_delta`` (:func:`cliffs_delta_proposed`), ``prepare`` (:func:`prepare_proposed`),
``_outliers`` (:func:`outliers_proposed`) and ``_p95_ttft`` (:func:`p95_ttft_proposed`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

EXACT_MAX_N = 1000
BLOCK = 100
Z = {0.95: 1.959963984540054}


def bootstrap_ci_proposed(
    values: Iterable[Any],
    resamples: int = 2000,
    seed: int = 12345,
    key: str = "",
    level: float = 0.95,
) -> tuple[float | None, float | None]:
    from mabench import stats

    x = stats._values(values)
    n = len(x)
    if n < 2:
        return None, None
    if np.all(x == x[0]):
        return float(x[0]), float(x[0])
    if n >= EXACT_MAX_N:
        z = Z.get(level)
        if z is None:
            from scipy.stats import norm

            z = float(norm.ppf(1 - (1 - level) / 2))
        half = z * float(x.std(ddof=1)) / np.sqrt(n)
        mean = float(x.mean())
        return float(mean - half), float(mean + half)
    rng = stats.group_rng(seed, key)
    means = np.empty(int(resamples))
    for lo in range(0, int(resamples), BLOCK):
        hi = min(lo + BLOCK, int(resamples))
        idx = rng.integers(0, n, size=(hi - lo, n))
        means[lo:hi] = x[idx].mean(axis=1)
    alpha = (1 - level) / 2
    q_lo, q_hi = np.quantile(means, [alpha, 1 - alpha])
    return float(q_lo), float(q_hi)


def cliffs_delta_proposed(x: Iterable[Any], y: Iterable[Any]) -> float | None:
    """Cliff's delta, exactly, in O((n + m) log m) time and O(n + m) memory.

    The library computes ``np.sign(a[:, None] - b[None, :]).mean()``: an n × m float matrix
    (plus the difference matrix), 13 GB for 80,000 vs 20,000 runs -- the 100k-run study is
    killed by the OOM killer in ``_comparisons``. Counting, for every a, the b below and the
    b above it in the sorted b gives the same number.
    """
    from mabench import stats

    a, b = stats._values(x), np.sort(stats._values(y))
    if len(a) == 0 or len(b) == 0:
        return None
    below = np.searchsorted(b, a, side="left").sum(dtype=np.int64)
    above = (len(b) - np.searchsorted(b, a, side="right")).sum(dtype=np.int64)
    return float((below - above) / (len(a) * len(b)))


_ORIGINAL: dict[str, Any] = {}


def prepare_proposed(runs: Any, agents: Any, calls: Any) -> tuple[Any, Any, Any]:
    """``prepare`` with the agents' topology looked up in a dict, not one ``Series.get`` of a
    MultiIndex per agent row (13 s for 200,000 agent rows)."""
    prepare = _ORIGINAL["prepare"]
    if "topology" not in runs:
        return prepare(runs, agents, calls)
    loc = list(runs.columns).index("topology")
    r, a, c = prepare(runs.drop(columns="topology"), agents, calls)
    r.insert(loc, "topology", runs["topology"].to_numpy())
    topo = dict(
        zip(zip(runs["config_id"], runs["run_index"], strict=True), runs["topology"], strict=True)
    )
    a["topology"] = [
        topo.get((cid, ri)) for cid, ri in zip(a["config_id"], a["run_index"], strict=True)
    ]
    return r, a, c


def outliers_proposed(runs: Any, metrics: Iterable[str]) -> Any:
    """``_outliers`` selecting the runs outside the fences with a mask instead of
    ``iterrows()`` over every run (20 s for 100,000 runs); same rows, same order."""
    import pandas as pd

    from mabench import stats

    rows = []
    for metric in metrics:
        fences = stats.iqr_fences(runs[metric])
        if fences is None:
            continue
        sub = runs[runs[metric].notna()]
        v = sub[metric].astype(float)
        out = sub[(v < fences["lower"]) | (v > fences["upper"])]
        for cid, scen, ri, val in zip(
            out["config_id"], out["scenario"], out["run_index"], out[metric], strict=True
        ):
            val = float(val)
            side = "low" if val < fences["lower"] else "high"
            rows.append(
                {
                    "metric": metric,
                    "config_id": cid,
                    "scenario": scen,
                    "run_index": int(ri),
                    "value": val,
                    "side": side,
                    "distance": (fences["lower"] - val)
                    if side == "low"
                    else (val - fences["upper"]),
                    **fences,
                }
            )
    out = pd.DataFrame(rows)
    if not out.empty:
        out = out.sort_values(["metric", "distance"], ascending=[True, False]).reset_index(
            drop=True
        )
    return out


_P95: list[Any] = []  # [calls frame, {config_id: concurrent client TTFTs}] of the last call


def p95_ttft_proposed(calls: Any, agents: Any, cid: str | None) -> tuple[Any, str]:
    """``_p95_ttft`` with the concurrent TTFTs grouped by config once, instead of a boolean
    mask over the whole calls table per config (9 s for 800,000 calls x 100 configs)."""
    original = _ORIGINAL["_p95_ttft"]
    if cid is None or calls.empty:
        return original(calls, agents, cid)
    if not _P95 or _P95[0] is not calls:
        conc = calls.loc[calls["phase"] == "concurrent", ["config_id", "client_ttft_ms"]]
        groups = {
            str(k): g.dropna().to_numpy() for k, g in conc.groupby("config_id")["client_ttft_ms"]
        }
        _P95[:] = [calls, groups]
    v = _P95[1].get(cid)
    if v is not None and len(v):
        return float(np.percentile(v, 95)), "P95 of per-call client TTFT, concurrent phase"
    return original(calls, agents, cid)


def apply() -> None:
    """Patch the proposed fixes into ``mabench.stats`` in this process."""
    from mabench import stats

    for name in ("prepare", "_p95_ttft", "_outliers", "bootstrap_ci", "cliffs_delta"):
        _ORIGINAL.setdefault(name, getattr(stats, name))
    stats.bootstrap_ci = bootstrap_ci_proposed
    stats.cliffs_delta = cliffs_delta_proposed
    stats.prepare = prepare_proposed
    stats._outliers = outliers_proposed
    stats._p95_ttft = p95_ttft_proposed
