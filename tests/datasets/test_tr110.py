"""The TR110 import reproduces TR110's own numbers and the facts in the dataset README."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from mabench.analysis import stats
from mabench.analysis.tables import SCHEMAS, read_table
from mabench.config import study_from_dict
from mabench.datasets import tr110
from mabench.steps import legacy, rules


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return tr110.import_tr110(None, tmp_path_factory.mktemp("tr110") / "tables")


@pytest.fixture(scope="module")
def runs(imported):
    return read_table(imported["runs"], "runs").to_pandas()


def test_files_match_the_schemas_and_duckdb_reads_them(imported) -> None:
    for name, path in imported.items():
        table = pq.read_table(path)
        assert table.schema.equals(SCHEMAS[name], check_metadata=False)
        read_table(path, name)  # the project's own check
    con = duckdb.connect()
    n_runs, n_cfg, mean = con.execute(
        f"select count(*), count(distinct config_id), avg(seed_efficiency) "
        f"from read_parquet('{imported['runs']}')"
    ).fetchone()
    assert (n_runs, n_cfg) == (150, 30)
    assert round(mean, 2) == 93.21
    assert con.execute(f"select count(*) from read_parquet('{imported['agents']}')").fetchone() == (
        300,
    )
    assert con.execute(f"select count(*) from read_parquet('{imported['calls']}')").fetchone() == (
        0,
    )


def test_counts_and_config_ids(runs) -> None:
    assert len(runs) == 150
    assert runs["config_id"].nunique() == 30
    ids = sorted(runs["config_id"].unique())
    assert ids[:3] == ["test001", "test002", "test003"]
    assert {"test018", "test100", "test108", "test200", "test202"} <= set(ids)
    assert runs.groupby("config_id").size().eq(5).all()
    assert set(runs["scenario"]) == {"baseline_vs_chimera", "chimera_hetero", "chimera_homo"}
    assert set(runs["source"]) == {"tr110"}


def test_per_test_averages_match_tr110(runs) -> None:
    g = runs.groupby("config_id")
    assert round(g["seed_speedup"].mean()["test108"], 3) == 1.985
    assert round(g["seed_efficiency"].mean()["test108"], 2) == 99.25
    assert round(g["seed_efficiency"].mean()["test002"], 2) == 73.15
    pt = tr110.per_test(runs)
    assert pt["reproduced"].all()
    assert len(pt) == 30


def test_readme_facts(runs) -> None:
    eff = runs["seed_efficiency"]
    assert round(eff.mean(), 2) == 93.21
    assert round(eff.median(), 2) == 98.18
    assert int(runs["contention_legacy"].sum()) == 17
    # the flag is exactly speedup < 1.5
    assert ((runs["seed_speedup"] < 1.5) == runs["contention_legacy"]).all()


def test_unmeasured_fields_stay_null(imported, runs) -> None:
    for col in (
        "solo_sum_s",
        "true_speedup",
        "true_efficiency",
        "contention_ttft",
        "contention_throughput",
        "started_at",
        "cpu_model",
    ):
        assert runs[col].isna().all(), col
    agents = read_table(imported["agents"], "agents").to_pandas()
    for col in ("solo_wall_s", "slowdown", "solo_tps", "solo_ttft_ms"):
        assert agents[col].isna().all(), col
    assert agents["concurrent_tps"].notna().all()
    assert set(agents["agent"]) == {"collector", "insight"}


def test_throughput_delta_is_collector_minus_insight(runs, imported) -> None:
    agents = read_table(imported["agents"], "agents").to_pandas()
    wide = agents.pivot_table(
        index=["config_id", "run_index"],
        columns="agent",
        values=["concurrent_tps", "concurrent_ttft_ms"],
    )
    r = runs.set_index(["config_id", "run_index"]).sort_index()
    wide = wide.sort_index()
    assert (
        r["throughput_delta"]
        - (wide[("concurrent_tps", "collector")] - wide[("concurrent_tps", "insight")])
    ).abs().max() < 1e-9
    assert (
        r["ttft_delta_ms"]
        - (wide[("concurrent_ttft_ms", "collector")] - wide[("concurrent_ttft_ms", "insight")])
    ).abs().max() < 1e-6


def test_options_follow_the_scenarios(imported) -> None:
    agents = (
        read_table(imported["agents"], "agents")
        .to_pandas()
        .set_index(["config_id", "run_index", "agent"])
    )
    assert agents.loc[("test001", 1, "collector"), "options_json"] == "{}"
    assert '"num_gpu": 60' in agents.loc[("test001", 1, "insight"), "options_json"]
    homo = agents.loc[("test108", 1)]
    assert homo.loc["collector", "options_json"] == homo.loc["insight", "options_json"]


def test_reanalysis_checks(runs) -> None:
    out = tr110.reanalyse(runs)
    checks = out["checks"].set_index("check")
    value = lambda name: tr110.check_value(out["checks"], name)  # noqa: E731
    assert value("n_runs") == 150 and value("n_configs") == 30
    assert round(value("mean_efficiency"), 2) == 93.21
    assert round(value("median_efficiency"), 2) == 98.18
    assert value("legacy_flagged") == 17
    assert value("per_test_reproduced") == 30
    assert checks.loc["contention_rule_is_speedup", "agrees"]
    # TR110 stored throughput_delta as insight - collector in every run
    assert value("throughput_delta_sign") == 150
    assert not checks.loc["throughput_delta_sign", "agrees"]
    assert checks.loc["ttft_delta_sign", "agrees"]
    assert value("ttft_gap_runs") > value("ttft_gap_runs_flagged")
    assert round(value("best_config_efficiency"), 2) == 99.25


def test_cli(tmp_path, capsys) -> None:
    parser = argparse.ArgumentParser()
    tr110.configure(parser)
    args = parser.parse_args(["--out", str(tmp_path / "t"), "--study", "legacy"])
    assert args.src_dir is None
    assert tr110.main(args) == 0
    assert "150 runs of 30 configs" in capsys.readouterr().out
    runs = read_table(tmp_path / "t" / "runs.parquet", "runs").to_pandas()
    assert set(runs["study"]) == {"legacy"}
    # an explicit source folder (the bundled copy's path) gives the same table
    args = parser.parse_args([str(tr110.bundled_dir()), "--out", str(tmp_path / "u")])
    assert tr110.main(args) == 0
    assert len(read_table(tmp_path / "u" / "runs.parquet", "runs")) == 150


def test_not_a_tr110_folder(tmp_path) -> None:
    with pytest.raises(tr110.LayoutError, match="TR110 layout"):
        tr110.import_tr110(tmp_path, tmp_path / "out")


def test_an_imported_folder_is_the_one_reanalysed(tmp_path) -> None:
    # a user's TR110 folder with one test fewer than the bundled copy
    src = tmp_path / "tr110"
    shutil.copytree(tr110.bundled_dir(), src)
    shutil.rmtree(next(src.glob("phase_*_test_002")))
    study = study_from_dict({"study": "mine", "import": {"format": "tr110", "path": str(src)}})
    settings = stats.resolve_settings(rules.report_settings(study))
    runs = tr110.frames(src)["runs"]
    checks = legacy.legacy_data(runs, settings).tr110["checks"].set_index("check")
    assert checks.loc["n_configs", "computed"] == 29
    assert checks.loc["per_test_reproduced", "agrees"]  # the reanalysis read the same folder
