"""Scaling laws: a series whose S(N) follows a known Amdahl or USL law (small seeded noise) gets
its parameters back within their bootstrap intervals, the right N beyond which another agent no
longer helps, eta(N), TR129's throughput normalisation on known inputs; too few agent counts give
a reason and no fit; flagged runs are left out; the report shows the section only with a series."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mabench.analysis import plots, report, stats
from mabench.analysis.stats import scaling
from mabench.analysis.tables import AGENTS_SCHEMA, RUNS_SCHEMA, to_table

AGENT_WALL_S = 10.0  # each agent's wall alone with the whole machine
TOKENS = 100  # tokens each agent generates in a run
LEVELS = (1, 2, 4, 8)


def series_rows(
    scenario: str,
    speedup: Callable[[int], float],
    levels: tuple[int, ...] = LEVELS,
    runs: int = 5,
    noise: float = 0.02,
    seed: int = 1,
    flagged: Callable[[int, int], bool] = lambda n, i: False,
) -> tuple[list[dict], list[dict]]:
    """Run and agent rows of one series: per N, ``runs`` runs whose true speedup is
    ``speedup(N)`` times a seeded lognormal factor of sigma ``noise``; each agent generates
    TOKENS tokens over the concurrent wall; ``flagged(N, run)`` marks a run work_mismatch."""
    rng = np.random.default_rng(seed)
    run_rows, agent_rows = [], []
    for n in levels:
        for i in range(1, runs + 1):
            s = speedup(n) * float(rng.lognormal(0, noise)) if noise else speedup(n)
            key = {
                "study": "scaling",
                "source": "mabench",
                "config_id": f"{scenario}{n}",
                "scenario": scenario,
                "run_index": i,
            }
            wall = n * AGENT_WALL_S / s
            run_rows.append(
                {
                    **key,
                    "n_agents": n,
                    "topology": "dedicated",
                    "phase_order": "sequential,solo,concurrent",
                    "concurrent_wall_s": wall,
                    "concurrent_sum_s": n * wall,
                    "sequential_sum_s": n * AGENT_WALL_S,
                    "solo_sum_s": n * AGENT_WALL_S,
                    "seed_speedup": float(n),
                    "seed_efficiency": 100.0,
                    "true_speedup": s,
                    "true_efficiency": 100 * s / n,
                    "interference_speedup": s,
                    "interference_efficiency": 100 * s / n,
                    "baseline": "sequential",
                    "validity_flags": "work_mismatch" if flagged(n, i) else "",
                }
            )
            for a in range(n):
                agent_rows.append(
                    {
                        **key,
                        "agent": f"agent{a + 1}",
                        "solo_wall_s": AGENT_WALL_S,
                        "sequential_wall_s": AGENT_WALL_S,
                        "concurrent_wall_s": wall,
                        "concurrent_eval_count": TOKENS,
                        "solo_eval_count": TOKENS,
                    }
                )
    return run_rows, agent_rows


def tables(*series: tuple[list[dict], list[dict]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The runs and agents tables (every schema column, typed) of the series' rows."""
    runs = [r for rows, _ in series for r in rows]
    agents = [a for _, rows in series for a in rows]
    return (
        to_table(runs, RUNS_SCHEMA).to_pandas(),
        to_table(agents, AGENTS_SCHEMA).to_pandas(),
    )


def amdahl_law(s: float) -> Callable[[int], float]:
    return lambda n: float(scaling.amdahl(np.float64(n), s))


def usl_law(s: float, k: float) -> Callable[[int], float]:
    return lambda n: float(scaling.usl(np.float64(n), s, k))


def _fit(fits: pd.DataFrame, scenario: str, law: str) -> dict:
    return fits[(fits["scenario"] == scenario) & (fits["law"] == law)].iloc[0].to_dict()


def _inside(value: float, low: float, high: float) -> bool:
    return low <= value <= high


def test_amdahl_series_recovers_its_serial_fraction_within_the_interval() -> None:
    runs, agents = tables(series_rows("queue", amdahl_law(0.25)))
    fits = scaling.scaling_tables(runs, agents).fits
    fit = _fit(fits, "queue", "amdahl")
    assert fit["reason"] is None and fit["resamples"] == scaling.RESAMPLES
    assert _inside(0.25, fit["s_ci_low"], fit["s_ci_high"]), fit
    assert fit["s_ci_high"] - fit["s_ci_low"] < 0.05  # 2 % noise: a tight interval
    assert 0 < fit["rmse"] < 0.1
    assert pd.isna(fit["k"]) and pd.isna(fit["n_peak"])  # Amdahl has no k and never falls
    # S(N + 1) - S(N) = 0.75 / ((0.75 + 0.25 N) (1 + 0.25 N)): 0.109 at N = 7, 0.091 at N = 8
    assert fit["n_marginal"] == 8


def test_usl_series_with_a_peak_recovers_s_and_k_and_the_peak() -> None:
    s, k = 0.05, 0.02  # S peaks at sqrt(0.95 / 0.02) = 6.9: N = 7
    runs, agents = tables(series_rows("slots", usl_law(s, k), levels=(1, 2, 4, 8, 12), seed=3))
    fits = scaling.scaling_tables(runs, agents).fits
    fit = _fit(fits, "slots", "usl")
    assert fit["reason"] is None
    assert _inside(s, fit["s_ci_low"], fit["s_ci_high"]), fit
    assert _inside(k, fit["k_ci_low"], fit["k_ci_high"]), fit
    assert fit["n_peak"] == scaling.usl_peak(s, k) == 7
    assert "extrapolation" not in (fit["note"] or "")
    amdahl = _fit(fits, "slots", "amdahl")
    assert amdahl["rmse"] > 3 * fit["rmse"]  # a falling curve: Amdahl cannot follow it


def test_usl_peak_is_the_integer_that_maximises_s() -> None:
    for s, k in ((0.1, 0.01), (0.0, 0.05), (0.3, 0.003), (0.9, 0.2)):
        n = np.arange(1, 200, dtype=float)
        assert scaling.usl_peak(s, k) == int(n[np.argmax(scaling.usl(n, s, k))])
    assert scaling.usl_peak(0.2, 0.0) is None


def test_marginal_rule_says_so_when_every_agent_keeps_helping() -> None:
    assert scaling.first_marginal_below(lambda x: scaling.amdahl(x, 0.0)) is None
    # perfect scaling: s ends at (or within the solver's tolerance of) its bound 0, so the
    # rule lands far beyond the agents measured, or nowhere
    fit = scaling.fit_row(scaling.AMDAHL, np.repeat([1.0, 2, 4], 3), np.repeat([1.0, 2, 4], 3))
    assert fit["s"] < 1e-4
    expected = scaling.first_marginal_below(lambda x: scaling.amdahl(x, fit["s"]))
    if expected is None:
        assert pd.isna(fit["n_marginal"]) and "every agent up to 100000" in fit["note"]
    else:
        assert fit["n_marginal"] == expected > 100 and "an extrapolation" in fit["note"]


def test_a_peak_beyond_the_measured_agents_is_called_an_extrapolation() -> None:
    runs, agents = tables(series_rows("dedicated", usl_law(0.02, 0.001), noise=0.0))
    fit = _fit(scaling.scaling_tables(runs, agents).fits, "dedicated", "usl")
    assert fit["n_peak"] > 8 and "extrapolation" in fit["note"]


def test_eta_and_the_tr129_normalisation_on_known_inputs() -> None:
    speedups = {1: 0.95, 2: 1.6, 4: 2.4, 8: 2.8}
    runs, agents = tables(series_rows("queue", speedups.__getitem__, noise=0.0, runs=3))
    levels = scaling.scaling_tables(runs, agents).levels.set_index("n_agents")
    for n, s in speedups.items():
        row = levels.loc[n]
        assert row["speedup"] == pytest.approx(s)
        assert row["efficiency_pct"] == pytest.approx(100 * s / n)
        assert row["n_runs"] == 3 and row["n_left_out"] == 0
        # each agent: TOKENS over the concurrent wall n * AGENT_WALL_S / s
        assert row["per_agent_tps"] == pytest.approx(TOKENS * s / (n * AGENT_WALL_S))
        assert row["total_tps"] == pytest.approx(TOKENS * s / AGENT_WALL_S)
        # TR129: per-agent throughput over that of one agent (N = 1, speedup 0.95)
        assert row["tr129_efficiency_pct"] == pytest.approx(100 * (s / n) / 0.95)
        assert row["total_throughput_ratio"] == pytest.approx(s / 0.95)
    assert levels.loc[1, "tr129_efficiency_pct"] == pytest.approx(100)


def test_interval_of_s_and_eta_is_the_t_interval_over_runs() -> None:
    runs, agents = tables(series_rows("queue", amdahl_law(0.3), seed=5))
    levels = scaling.scaling_tables(runs, agents).levels.set_index("n_agents")
    for n in LEVELS:
        values = runs.loc[runs["n_agents"] == n, "true_speedup"].to_numpy(float)
        low, high = stats.t_interval(values)
        assert levels.loc[n, "speedup_ci_low"] == pytest.approx(low)
        assert levels.loc[n, "speedup_ci_high"] == pytest.approx(high)
        assert levels.loc[n, "efficiency_ci_low"] == pytest.approx(100 * low / n)
        assert levels.loc[n, "efficiency_ci_high"] == pytest.approx(100 * high / n)


def test_two_agent_counts_give_a_reason_and_no_fit() -> None:
    two = scaling.fit_row(scaling.USL, np.repeat([1.0, 2], 3), np.repeat([1.0, 1.8], 3))
    assert two["s"] is None and two["k"] is None and two["rmse"] is None
    assert "2 agent count(s)" in two["reason"] and "at least 3" in two["reason"]
    # a series (its configs cover 1, 2, 4) whose N = 4 runs were all flagged
    rows = series_rows("queue", amdahl_law(0.3), levels=(1, 2, 4), flagged=lambda n, i: n == 4)
    runs, agents = tables(rows)
    out = scaling.scaling_tables(runs, agents)
    assert out.fits["reason"].str.contains("(1, 2)", regex=False).all()
    assert out.fits[["s", "k", "rmse", "n_peak", "n_marginal"]].isna().all().all()
    four = out.levels.set_index("n_agents").loc[4]
    assert pd.isna(four["speedup"]) and "5 of 5 flagged" in four["reason"]
    assert out.levels["amdahl_speedup"].isna().all()


def test_without_a_baseline_only_the_tr129_style_numbers_remain() -> None:
    rows, agent_rows = series_rows("queue", amdahl_law(0.3), noise=0.0, runs=2)
    for r in rows:
        r["true_speedup"] = r["true_efficiency"] = None
    out = scaling.scaling_tables(*tables((rows, agent_rows)))
    levels = out.levels.set_index("n_agents")
    assert levels["speedup"].isna().all() and levels["efficiency_pct"].isna().all()
    assert levels.loc[8, "tr129_efficiency_pct"] == pytest.approx(
        100 * scaling.amdahl(8.0, 0.3) / 8
    )
    assert levels["reason"].str.startswith("no valid run with a true speedup").all()
    assert out.fits["reason"].str.startswith("0 agent count(s)").all()
    assert out.fits["s"].isna().all()


def test_a_fit_that_does_not_converge_gives_its_reason_and_no_numbers() -> None:
    broken = scaling.Law(
        "broken",
        lambda n, s: n * np.nan,
        lambda n, s: np.full((len(n), 1), np.nan),
        (0.1,),
        (0.0,),
        (1.0,),
    )
    n = np.repeat([1.0, 2, 4], 3)
    fit = scaling.fit_row(broken, n, scaling.amdahl(n, 0.2))
    assert fit["reason"].startswith("broken fit did not converge")
    assert fit["s"] is None and fit["rmse"] is None and fit["n_marginal"] is None


def test_flagged_runs_are_left_out() -> None:
    def bad(n: int, i: int) -> bool:
        return i == 1

    clean = series_rows("queue", amdahl_law(0.3), seed=2)
    marked = series_rows("queue", amdahl_law(0.3), seed=2, flagged=bad)
    for r in marked[0]:
        if r["run_index"] == 1:
            r["true_speedup"] = 50.0  # a flagged run's value must not count
    got = scaling.scaling_tables(*tables(marked)).levels.set_index("n_agents")
    kept = tables(clean)[0]
    kept = kept[kept["run_index"] != 1]
    for n in LEVELS:
        expected = kept.loc[kept["n_agents"] == n, "true_speedup"].mean()
        assert got.loc[n, "speedup"] == pytest.approx(expected)
        assert got.loc[n, "n_runs"] == 4 and got.loc[n, "n_left_out"] == 1


def test_only_scenarios_covering_three_agent_counts_with_one_are_series() -> None:
    runs, agents = tables(
        series_rows("queue", amdahl_law(0.3)),
        series_rows("pairs", amdahl_law(0.3), levels=(2, 4, 8)),
        series_rows("short", amdahl_law(0.3), levels=(1, 2)),
    )
    assert scaling.scaling_series(runs) == ["queue"]
    out = scaling.scaling_tables(runs, agents)
    assert set(out.levels["scenario"]) == set(out.fits["scenario"]) == {"queue"}
    none = scaling.scaling_tables(runs[runs["scenario"] != "queue"], agents)
    assert none.levels.empty and none.fits.empty and none.reference.empty
    assert list(none.levels.columns) == list(scaling.LEVEL_COLUMNS)


def test_reference_rows_put_tr129_beside_ours() -> None:
    runs, agents = tables(series_rows("queue", amdahl_law(0.45), noise=0.0, runs=2))
    out = scaling.scaling_tables(runs, agents)
    ref = out.reference
    eta = ref[ref["quantity"].str.startswith("per-agent efficiency")].set_index("n_agents")
    assert list(eta.index) == [2, 4, 8]
    assert eta.loc[4, "reference_low"] == 34.0 and eta.loc[4, "reference_high"] == 40.0
    assert eta.loc[4, "ours"] == pytest.approx(100 * scaling.amdahl(4.0, 0.45) / 4)
    s_row = ref[ref["quantity"] == "Amdahl serial fraction s"].iloc[0]
    assert s_row["ours"] == pytest.approx(0.45, abs=1e-6)
    assert s_row["ours_tr129_style"] == pytest.approx(0.45, abs=1e-6)  # same law, same data
    assert (s_row["reference_low"], s_row["reference_high"]) == scaling.TR129_REFERENCE.amdahl_s


def test_bootstrap_is_seeded_and_fast() -> None:
    runs, agents = tables(series_rows("queue", usl_law(0.1, 0.01)))
    start = time.perf_counter()
    first = scaling.scaling_tables(runs, agents).fits
    elapsed = time.perf_counter() - start
    pd.testing.assert_frame_equal(first, scaling.scaling_tables(runs, agents).fits)
    assert elapsed < 5  # about 0.3 s on a 2-core VM; generous for a shared machine


# ---------------------------------------------------------------------------------------------
# The statistics folder and the report
# ---------------------------------------------------------------------------------------------


def _study(root: Path, with_series: bool) -> Path:
    """A small study written as the pipeline would (stats, figures, report): a scaling series
    beside a two-agent scenario, or the two-agent scenario alone."""
    parts = [series_rows("pairs", amdahl_law(0.2), levels=(2,), runs=3, seed=9)]
    if with_series:
        parts.append(series_rows("queue", usl_law(0.1, 0.02), runs=3, seed=4))
    runs, agents = tables(*parts)
    calls = pd.DataFrame(columns=["config_id", "run_index", "phase", "agent", "error_kind"])
    s = stats.compute_statistics(runs, agents, calls, {"study": "scaling"})
    stats.write_statistics(s, root / "stats")
    plots.make_figures(runs, agents, calls, s, root / "figures")
    report.render_report(root / "stats", None, root / "figures", {}, root / "report.md")
    return root


def test_report_shows_the_scaling_section_with_a_series(tmp_path: Path) -> None:
    d = _study(tmp_path, with_series=True)
    loaded = stats.load_statistics(d / "stats")
    assert set(loaded.scaling["scenario"]) == {"queue"} and len(loaded.scaling_fits) == 2
    text = (d / "report.md").read_text()
    section = text[text.index("## Scaling with the number of agents") :]
    section = section[: section.index("\n## ", 1)]
    assert "Amdahl" in section and "Universal Scalability Law" in section
    assert "TR129" in section and "another machine" in section
    assert "| 8 |" in section  # the per-N table has the N = 8 row
    table_lines = [line for line in section.splitlines() if line.startswith("|")]
    assert len(table_lines) == (2 + 4) + (2 + 2) + (2 + 5)  # per N, fits, beside TR129
    assert not re.search(r"\bnan\b", section, re.IGNORECASE) and "None" not in section
    appendix = text[text.index("## Appendix D") :]
    for name in ("scaling", "scaling_fits", "scaling_reference"):
        assert f"`stats/{name}.parquet`" in appendix
    made = {e["name"]: e for e in plots.read_manifest(d / "figures")}
    for name in ("scaling_speedup", "scaling_efficiency"):
        assert made[name]["status"] == "made"
        assert f"{name}.png" in section


def test_report_hides_the_scaling_section_without_a_series(tmp_path: Path) -> None:
    d = _study(tmp_path, with_series=False)
    loaded = stats.load_statistics(d / "stats")
    assert loaded.scaling.empty and loaded.scaling_fits.empty
    assert "## Scaling with the number of agents" not in (d / "report.md").read_text()
    made = {e["name"]: e for e in plots.read_manifest(d / "figures")}
    assert made["scaling_speedup"]["status"] == "skipped"
    assert "scaling series" in made["scaling_speedup"]["note"]
