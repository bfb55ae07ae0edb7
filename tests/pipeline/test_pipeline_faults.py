"""Faults not tried before, end to end: real Snakemake, real server processes (the ollama
backend, run by a stand-in `ollama` binary that serves the simulated server with injected
faults), real files. Nothing measured is lost: every record written stays byte-identical, no
partial record is left, and the next invocation measures only what is missing."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from snake import fake_ollama_study, snakemake

pytestmark = pytest.mark.slow


def write_study(path: Path, fake_ollama: Path, **extra) -> Path:
    return fake_ollama_study(path, fake_ollama, "faults", **{"runs": 2, **extra})


FAST = "--ttft-ms 20 --token-ms 2"


def mount_tmpfs(where: Path, size: str) -> None:
    where.mkdir(parents=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}): needs root")


def fill(disk: Path) -> Path:
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 4096)
        except OSError:
            pass
    return filler


def test_a_disk_that_fills_while_a_record_is_written_loses_nothing(tmp_path, fake_ollama):
    study = write_study(tmp_path / "study.yaml", fake_ollama)
    env = {"FAKE_OLLAMA_ARGS": FAST}
    runs = tmp_path / "results" / "faults" / "runs" / "c1"
    mount_tmpfs(runs, "1m")  # the records' folder is a filesystem of its own
    try:
        target = "results/faults/runs/c1/run_1.json"
        snakemake(tmp_path, target, configfile=study, env=env, check=True)
        first = (runs / "run_1.json").read_bytes()
        filler = fill(runs)

        full = snakemake(tmp_path, configfile=study, env=env)
        assert full.returncode != 0
        written = "results/faults/runs/c1/run_2.json"
        assert f"cannot write {written}: No space left on device" in full.stderr
        assert "no partial file remains; free space there" in full.stderr
        assert sorted(p.name for p in runs.iterdir()) == ["filler", "run_1.json"]
        assert (runs / "run_1.json").read_bytes() == first
        (failure,) = (tmp_path / "results" / "faults" / "failures").glob("*.json")
        report = json.loads(failure.read_text())
        assert report["run_index"] == 2 and "No space left on device" in report["message"]

        filler.unlink()  # space again: only the missing run is measured
        snakemake(tmp_path, configfile=study, env=env, check=True)
        assert sorted(p.name for p in runs.glob("*.json")) == ["run_1.json", "run_2.json"]
        assert (runs / "run_1.json").read_bytes() == first
    finally:
        subprocess.run(["umount", str(runs)], check=True)


def test_a_reset_mid_stream_is_retried_and_a_miscount_is_flagged_in_the_report(
    tmp_path, fake_ollama
):
    # Each run makes 5 generations per server (warm-up, 2 solo, 2 concurrent): the 7th is
    # reset by the server after 3 tokens, once (--fault-once); the retry measures the run.
    # Every answer reports 2 tokens more than it streamed.
    once = tmp_path / "reset"
    faults = f"--fault reset --fault-after 6 --fault-after-tokens 3 --fault-once {once}"
    env = {"FAKE_OLLAMA_ARGS": f"{FAST} {faults} --count-offset 2"}
    study = write_study(tmp_path / "study.yaml", fake_ollama, retries=1)
    snakemake(tmp_path, configfile=study, env=env, check=True)
    results = tmp_path / "results" / "faults"
    records = sorted(p.name for p in (results / "runs" / "c1").glob("*.json"))
    assert records == ["run_1.json", "run_2.json"]
    (failure,) = (results / "failures").glob("*.json")
    report = json.loads(failure.read_text())
    assert report["cause"] == "protocol" and "reset by peer" in report["message"]
    assert report["phase"] in ("solo", "concurrent")
    assert report["agent"] in ("collector", "insight")
    assert report["server_url"].split("/api/")[0] in report["message"]

    for name in records:
        record = json.loads((results / "runs" / "c1" / name).read_text())
        assert "token_count_differs" in record["validity"]["flags"]
        assert record["validity"]["token_counts"]["differing"][0]["reported"] == 10
    text = (results / "technical_report.md").read_text()
    assert "2 runs were recorded in 3 attempts: 1 attempt failed" in text
    assert "**Reported token counts**: 2 runs had a call whose server-reported" in text
