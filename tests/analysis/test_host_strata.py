"""Runs by host and hardware: Slurm columns in the runs table, the strata, and the report's
"Hosts and hardware" section with its warning for configs measured on different hardware."""

from __future__ import annotations

import re

import msgspec
import pandas as pd
import pyarrow as pa
import pytest
import synthetic

from mabench.analysis import hosts, report
from mabench.analysis.aggregate import run_row
from mabench.analysis.tables import RUNS_SCHEMA, to_table, write_table
from mabench.datasets.synthetic import make_record
from mabench.measure.records import SlurmJob

HEADING = "\n## Hosts and hardware\n"


def test_the_runs_table_has_the_slurm_job_of_each_run():
    job = SlurmJob("77", "mabench", "gpu3", "gpu", 16, ["0", "1"])
    plain = make_record(1)
    in_slurm = msgspec.structs.replace(
        plain, environment=msgspec.structs.replace(plain.environment, slurm=job)
    )
    runs = to_table([run_row(in_slurm, "a.json"), run_row(plain, "b.json")], RUNS_SCHEMA)
    cols = runs.select(
        ["slurm_job_id", "slurm_node", "slurm_partition", "slurm_cpus", "slurm_gpus"]
    )
    assert cols.to_pylist() == [
        {
            "slurm_job_id": "77",
            "slurm_node": "gpu3",
            "slurm_partition": "gpu",
            "slurm_cpus": 16,
            "slurm_gpus": 2,
        },
        dict.fromkeys(cols.column_names),  # outside Slurm: null, never zero
    ]


def _on_two_nodes(runs: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The synthetic study measured on two Slurm nodes of different CPUs; one config's runs
    are split between them, every other config ran on node `a100-1`."""
    runs = runs.copy()
    mixed = sorted(runs["config_id"].unique())[0]
    second = (runs["config_id"] == mixed) & (runs["run_index"] % 2 == 0)
    runs["slurm_node"] = "a100-1"
    runs["slurm_partition"] = "gpu"
    runs["slurm_cpus"] = 32
    runs["slurm_gpus"] = 1
    runs.loc[second, "slurm_node"] = "h100-7"
    runs.loc[second, "cpu_model"] = "Other CPU 42"
    runs.loc[second, "cpu_count"] = 64
    return runs, mixed


def test_one_host_needs_no_section():
    strata = hosts.host_strata(synthetic.build(seed=3)["runs"])
    assert len(strata.hosts) == 1 and strata.mixed_hardware.empty
    assert not strata.shown
    row = strata.hosts.iloc[0]
    assert row["host"] == "bench-1" and row["hardware"] == "Synthetic CPU 9000 x2"


def test_two_hosts_are_stratified_and_a_mixed_config_is_named():
    runs, mixed = _on_two_nodes(synthetic.build(seed=3)["runs"])
    strata = hosts.host_strata(runs)
    assert strata.shown
    by_host = strata.hosts.set_index("host")
    assert set(by_host.index) == {"a100-1", "h100-7"}
    assert by_host["n_runs"].sum() == len(runs)
    assert by_host.loc["h100-7", "n_configs"] == 1
    assert by_host.loc["h100-7", "hardware"] == "Other CPU 42 x64"
    assert by_host.loc["a100-1", "partitions"] == "gpu"
    expected = runs[runs["slurm_node"] == "h100-7"]["true_efficiency"].mean()
    assert by_host.loc["h100-7", "true_efficiency_mean"] == pytest.approx(expected)
    assert strata.mixed_hardware["config_id"].tolist() == [mixed]
    assert strata.mixed_hardware.iloc[0]["n_hardware"] == 2
    assert strata.mixed_hardware.iloc[0]["hosts"] == "a100-1; h100-7"


def test_the_report_shows_hosts_and_warns_only_when_it_must(full_study, tmp_path):
    runs = pd.read_parquet(full_study / "tables" / "runs.parquet")
    two, mixed = _on_two_nodes(runs)
    rendered = {}
    for name, frame in (("one", runs), ("two", two)):
        table = pa.Table.from_pandas(frame, schema=RUNS_SCHEMA, preserve_index=False)
        write_table(table, tmp_path / name / "runs.parquet")
        hosts.write_host_strata(tmp_path / name / "runs.parquet", tmp_path / name / "hosts")
        out = report.render_report(
            full_study / "stats",
            full_study / "tables",
            full_study / "figures",
            {},
            tmp_path / name / "technical_report.md",
            hosts_dir=tmp_path / name / "hosts",
        )
        rendered[name] = out.read_text()
    assert HEADING not in rendered["one"]
    text = rendered["two"]
    section = text.split(HEADING, 1)[1].split("\n## ", 1)[0]
    assert "2 hosts" in section
    assert re.search(r"Warning: 1 config measured on different hardware", section)
    assert f"`{mixed}`" in section or mixed in section
    assert "`a100-1`" in section and "`h100-7`" in section
    assert "hosts/hosts.parquet" in text and "hosts/mixed_hardware.parquet" in text
    assert text.index(HEADING) < text.index("\n## Reliability\n")
