"""Runs by host and hardware: the report's stratification when a study spans hosts.

A study measured on a cluster may span nodes of different hardware, and a run's numbers depend
on the hardware that measured it. From the runs table, two small tables:

- ``hosts``: one row per host and hardware (CPU model, logical CPUs, GPUs seen), with the Slurm
  partitions and allocations it was measured under, its runs and configs, and the mean true
  and seed efficiency of those runs;
- ``mixed_hardware``: the configs whose runs were measured on more than one hardware. Their
  spread mixes hardware with run-to-run noise; the report warns about each.

The report shows both only when a study spans hosts or some config mixes hardware. Self-contained:
it reads nothing but ``runs.parquet`` and writes ``hosts.parquet`` and ``mixed_hardware.parquet``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from mabench.analysis.tables import read_table

HOSTS_FILE = "hosts.parquet"
MIXED_FILE = "mixed_hardware.parquet"


@dataclass(frozen=True)
class HostStrata:
    hosts: pd.DataFrame
    mixed_hardware: pd.DataFrame

    @property
    def shown(self) -> bool:
        """Whether the report has something to say: several hosts, or a config on mixed hardware."""
        return len(self.hosts) > 1 or len(self.mixed_hardware) > 0


def _joined(values: pd.Series) -> str:
    return "; ".join(sorted({str(v) for v in values.dropna()}))


def _hardware(runs: pd.DataFrame) -> pd.Series:
    """What a run's host is made of, as one label: CPU model x logical CPUs, GPUs seen."""
    cpu = runs["cpu_model"].fillna("unknown CPU") + " x" + runs["cpu_count"].astype("string")
    gpus = runs["gpus"].fillna("")
    return (cpu.fillna("unknown CPU") + gpus.where(gpus == "", ", " + gpus)).astype(str)


def _host(runs: pd.DataFrame) -> pd.Series:
    """The node Slurm named, else the harness's hostname."""
    return runs["slurm_node"].fillna(runs["hostname"]).fillna("unknown").astype(str)


def _by_host(runs: pd.DataFrame) -> pd.DataFrame:
    grouped = runs.groupby(["host", "hardware"], sort=True, dropna=False)
    out = grouped.agg(
        partitions=("slurm_partition", _joined),
        slurm_cpus=("slurm_cpus", _joined),
        slurm_gpus=("slurm_gpus", _joined),
        n_runs=("run_index", "size"),
        n_configs=("config_id", "nunique"),
        true_efficiency_mean=("true_efficiency", "mean"),
        seed_efficiency_mean=("seed_efficiency", "mean"),
    )
    return out.reset_index()


def _mixed(runs: pd.DataFrame) -> pd.DataFrame:
    counts = runs.groupby(["config_id", "hardware"], sort=True).size().rename("n").reset_index()
    spans = counts.groupby("config_id")["hardware"].transform("size")
    mixed = counts[spans > 1]
    if mixed.empty:
        return pd.DataFrame(
            {"config_id": [], "n_hardware": [], "hardware": [], "hosts": [], "n_runs": []}
        )
    hosts = runs.groupby("config_id")["host"].agg(_joined)
    rows = [
        {
            "config_id": cid,
            "n_hardware": len(g),
            "hardware": "; ".join(
                f"{h} ({n} runs)" for h, n in zip(g["hardware"], g["n"], strict=True)
            ),
            "hosts": hosts[cid],
            "n_runs": int(g["n"].sum()),
        }
        for cid, g in mixed.groupby("config_id", sort=True)
    ]
    return pd.DataFrame(rows)


def host_strata(runs: pd.DataFrame) -> HostStrata:
    """The ``hosts`` and ``mixed_hardware`` tables of a runs table (see the module docstring)."""
    runs = runs.assign(host=_host(runs), hardware=_hardware(runs))
    return HostStrata(hosts=_by_host(runs), mixed_hardware=_mixed(runs))


def write_host_strata(runs_path: str | Path, out_dir: str | Path) -> HostStrata:
    """Read ``runs.parquet``, write both tables under ``out_dir``."""
    strata = host_strata(read_table(runs_path, "runs").to_pandas())
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for frame, name in ((strata.hosts, HOSTS_FILE), (strata.mixed_hardware, MIXED_FILE)):
        tmp = out / f".{name}.tmp"
        frame.to_parquet(tmp, index=False)
        tmp.replace(out / name)
    return strata


def read_host_strata(out_dir: str | Path) -> HostStrata:
    out = Path(out_dir)
    return HostStrata(pd.read_parquet(out / HOSTS_FILE), pd.read_parquet(out / MIXED_FILE))
