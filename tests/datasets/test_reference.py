"""The bundled TR114 v2 reference and the comparison with our tables."""

from __future__ import annotations

import pandas as pd
import pytest
from synthetic import build

from mabench.datasets import reference, tr110


def test_normalise_scenario() -> None:
    assert reference.normalise_scenario("chimera-homo") == "chimera_homo"
    assert reference.normalise_scenario("chimera_homo") == "chimera_homo"
    assert reference.normalise_scenario("Baseline-vs-Chimera") == "baseline_vs_chimera"
    assert reference.normalise_scenario(None) is None


def test_load_tr114() -> None:
    ref = reference.load_reference("tr114")
    assert len(ref.configs) == 27
    assert set(ref.configs["scenario"]) == {"baseline_vs_chimera", "chimera_hetero", "chimera_homo"}
    sc = ref.scenarios.set_index("scenario")
    assert sc.loc["chimera_homo", "n_configs"] == 13  # both spellings merged
    assert sc.loc["chimera_hetero", "best_config"] == "test011"
    # TR110's tests 101, 102 and 105 are absent
    assert not {"test101", "test102", "test105"} & set(ref.configs["config_id"])
    with pytest.raises(ValueError, match="unknown reference"):
        reference.load_reference("tr999")


def test_claims_against_the_csv_and_tr110() -> None:
    ref = reference.load_reference("tr114")
    runs = tr110.frames()["runs"]
    claims = reference.check_claims(ref, runs).set_index("claim_id")
    assert claims.loc["tr114_overall_mean", "agrees"]  # 98.281 is the CSV mean
    assert round(claims.loc["tr114_overall_mean", "computed"], 3) == 98.281
    assert not claims.loc["tr114_top5", "agrees"]
    assert claims.loc["tr114_top5", "computed_text"].startswith("test011, test018, test103")
    assert not claims.loc["tr114_homo_mean", "agrees"]
    assert not claims.loc["tr110_mean", "agrees"]  # the text says 95.8, the data 93.21
    assert round(claims.loc["tr110_mean", "computed"], 2) == 93.21
    assert claims.loc["tr110_contention", "agrees"]  # 11.3 % is inside "10-15 %"
    without = reference.check_claims(ref, None)
    assert not without["claim_id"].str.startswith("tr110").any()


def test_compare_ours_with_tr114() -> None:
    f = build(seed=3)
    out = reference.compare(f["runs"], reference.load_reference("tr114"))
    cfg = out["config"].set_index("config_id")
    # only the configs both have
    assert set(cfg.index) == {"test001", "test004", "test007", "test011", "test108"}
    ours = f["runs"][f["runs"].config_id == "test004"]["seed_efficiency"].mean()
    assert cfg.loc["test004", "our_seed_efficiency"] == pytest.approx(ours)
    assert cfg.loc["test004", "ref_seed_efficiency"] == pytest.approx(98.983513)
    assert cfg.loc["test004", "seed_efficiency_diff_pp"] == pytest.approx(ours - 98.983513)
    assert cfg["our_true_efficiency"].notna().all()
    m = out["metrics"].set_index("metric")
    assert pd.isna(m.loc["mean true efficiency (%)", "reference"])
    assert "did not measure" in m.loc["mean true efficiency (%)", "note"]
    sc = out["scenario"].set_index("scenario")
    assert sc.loc["chimera_homo", "ref_n_configs"] == 13


def test_study_means_are_compared_on_the_configs_both_have() -> None:
    f = build(seed=3)
    ref = reference.load_reference("tr114")
    m = reference.compare(f["runs"], ref)["metrics"].set_index("metric")
    common = ["test001", "test004", "test007", "test011", "test108"]
    assert m.loc["configs compared (both have them)", "ours"] == 5
    assert m.loc["configs in the study", "ours"] == f["runs"]["config_id"].nunique()
    ours = f["runs"][f["runs"].config_id.isin(common)].groupby("config_id")["seed_efficiency"]
    theirs = ref.configs.set_index("config_id").loc[common, "mean_seed_efficiency"]
    row = m.loc["mean seed efficiency (%)"]
    assert row["ours"] == pytest.approx(ours.mean().mean())
    assert row["reference"] == pytest.approx(theirs.mean())
    none = reference.compare(f["runs"].assign(config_id="zz" + f["runs"]["config_id"]), ref)
    nm = none["metrics"].set_index("metric")
    assert nm.loc["configs compared (both have them)", "ours"] == 0
    assert "no config in common" in nm.loc["mean seed efficiency (%)", "note"]
