"""Run records say which Slurm job, node, partition, CPUs and GPUs measured them."""

from __future__ import annotations

import copy
from pathlib import Path

import msgspec
import pytest

from mabench.datasets.synthetic import make_record
from mabench.measure.records import (
    RecordError,
    RunRecord,
    SlurmJob,
    read_record,
    write_json_atomic,
    write_record,
)
from mabench.measure.slurm import slurm_job

STEP_ENV = {  # what Slurm 22.05 set in a job step of the test cluster (tests/cluster)
    "SLURM_JOB_ID": "14",
    "SLURM_CLUSTER_NAME": "mabench",
    "SLURMD_NODENAME": "vm",
    "SLURM_JOB_PARTITION": "mabench",
    "SLURM_CPUS_ON_NODE": "2",
    "SLURM_JOB_NODELIST": "vm",
}


def test_outside_slurm_there_is_no_job():
    assert slurm_job({"PATH": "/usr/bin"}) is None


def test_a_job_step_is_read_from_its_environment():
    assert slurm_job(STEP_ENV) == SlurmJob("14", "mabench", "vm", "mabench", 2, [])


def test_allocated_gpus_prefer_the_step_over_the_job():
    job = slurm_job({**STEP_ENV, "SLURM_JOB_GPUS": "0,1,2,3", "SLURM_STEP_GPUS": "2,3"})
    assert job is not None and job.gpus == ["2", "3"]
    job = slurm_job({**STEP_ENV, "SLURM_JOB_GPUS": "0,1"})
    assert job is not None and job.gpus == ["0", "1"]


def _with_slurm(record: RunRecord, job: SlurmJob | None) -> RunRecord:
    return msgspec.structs.replace(
        record, environment=msgspec.structs.replace(record.environment, slurm=job)
    )


def test_a_record_keeps_its_slurm_job(tmp_path: Path):
    record = _with_slurm(make_record(3), slurm_job({**STEP_ENV, "SLURM_STEP_GPUS": "0"}))
    write_record(tmp_path / "run_1.json", record)
    back = read_record(tmp_path / "run_1.json")
    assert back == record
    assert back.environment.slurm == SlurmJob("14", "mabench", "vm", "mabench", 2, ["0"])


def test_a_record_without_the_field_reads_with_no_slurm_job(tmp_path: Path):
    data = make_record(3).to_json()
    old = copy.deepcopy(data)
    del old["environment"]["slurm"]
    old["schema_version"] = 1
    write_json_atomic(tmp_path / "run_1.json", old)
    assert read_record(tmp_path / "run_1.json").environment.slurm is None


@pytest.mark.parametrize(
    ("field", "value"),
    [("cpus", "2"), ("gpus", "0,1"), ("node", None), ("surprise", 1)],
)
def test_a_malformed_slurm_job_is_refused_by_name(field, value):
    data = _with_slurm(make_record(3), slurm_job(STEP_ENV)).to_json()
    data["environment"]["slurm"][field] = value
    with pytest.raises(RecordError, match=r"\$\.environment\.slurm"):
        RunRecord.from_json(data)
