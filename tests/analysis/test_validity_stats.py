"""The validity statistics: reloads, both true efficiencies, flagged runs, phase order."""

from __future__ import annotations

import pandas as pd
import pytest

from mabench.analysis.stats.validity import flagged_runs, headline, passed_every_check, validity


def _runs() -> pd.DataFrame:
    # c1: three runs, two solo-first (80, 90) and one concurrent-first (70): an odd number of
    # runs leaves the alternation unbalanced. c2: one run whose work differed.
    return pd.DataFrame(
        {
            "config_id": ["c1", "c1", "c1", "c2"],
            "run_index": [1, 2, 3, 1],
            "phase_order": [
                "solo,concurrent",
                "concurrent,solo",
                "solo,concurrent",
                "solo,concurrent",
            ],
            "true_efficiency": [80.0, 70.0, 90.0, 50.0],
            "true_efficiency_excl_load": [80.0, 70.0, 90.0, 60.0],
            "solo_reloads": [0, 0, 0, 2],
            "concurrent_reloads": [0, 0, 0, 4],
            "solo_reload_s": [0.0, 0.0, 0.0, 0.6],
            "concurrent_reload_s": [0.0, 0.0, 0.0, 1.2],
            "work_matched": [True, True, True, False],
            "isolation_after_verified": [True, True, None, True],
            "work_diverged": ["", "", "", "insight:0"],
            "validity_flags": ["", "", None, "work_mismatch"],
        }
    )


def test_validity_per_config_and_overall() -> None:
    table = validity(_runs()).set_index("group")
    c1, c2, overall = table.loc["c1"], table.loc["c2"], table.loc["all"]
    assert c1["true_efficiency_solo_first"] == pytest.approx(85.0)
    assert c1["true_efficiency_concurrent_first"] == pytest.approx(70.0)
    assert (c1["n_solo_first"], c1["n_concurrent_first"]) == (2, 1)
    assert c1["phase_order_gap_pp"] == pytest.approx(15.0)
    assert (c2["concurrent_reloads"], c2["true_efficiency_excl_load"]) == (4.0, 60.0)
    assert (overall["work_checked"], overall["work_failed"]) == (4, 1)
    assert (overall["isolation_after_checked"], overall["isolation_after_failed"]) == (3, 0)
    assert overall["solo_reloads"] == pytest.approx(0.5)


def test_flagged_runs_are_listed_and_old_tables_have_none() -> None:
    flagged = flagged_runs(_runs())
    assert flagged[["config_id", "run_index", "work_diverged"]].values.tolist() == [
        ["c2", 1, "insight:0"]
    ]
    old = _runs().drop(columns=["validity_flags", "work_matched", "solo_reloads"])
    assert flagged_runs(old).empty
    row = validity(old).set_index("group").loc["all"]
    assert row["work_checked"] == 0 and row["solo_reloads"] is None


def test_headline_sample_leaves_out_flagged_runs_and_keeps_the_full_sample_beside() -> None:
    runs = _runs().assign(seed_efficiency=[95.0, 90.0, 97.0, 60.0], scenario="s")
    assert passed_every_check(runs).tolist() == [True, True, True, False]  # null: no check failed
    table = headline(runs, {"c1": "s", "c2": "s"})
    true = table[table["metric"] == "true_efficiency"].set_index("sample")
    assert (true.loc["valid", "n"], true.loc["valid", "mean"]) == (3, pytest.approx(80.0))
    assert (true.loc["all", "n"], true.loc["all", "mean"]) == (4, pytest.approx(72.5))
    assert set(table["n_flagged"]) == {1}
    assert list(table["metric"].unique()) == ["seed_efficiency", "true_efficiency"]


def test_headline_sample_is_every_run_without_flags_and_empty_without_runs() -> None:
    old = _runs().drop(columns="validity_flags").assign(seed_efficiency=90.0, scenario="s")
    assert passed_every_check(old).all()
    table = headline(old, {})
    assert set(table["n_flagged"]) == {0}
    assert headline(old.iloc[:0], {}).empty
