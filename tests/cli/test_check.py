"""``mabench check``: servers you already run, measured without a study file."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mabench.servers.net import free_port


def check(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mabench", "check", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_a_url_that_does_not_answer_stops_it_before_anything_runs(tmp_path):
    proc = check(tmp_path, "--url", f"http://127.0.0.1:{free_port()}", "--api", "openai")
    assert proc.returncode == 2
    assert "does not answer GET /v1/models" in proc.stderr and "Nothing was run" in proc.stderr
    assert not (tmp_path / "results").exists()


def test_servers_with_several_models_need_one_chosen(tmp_path, sim_server):
    srv = sim_server(model=["smollm2:135m", "other:1b"])
    proc = check(tmp_path, "--url", srv.url)
    assert proc.returncode == 2
    assert "choose the model with --model (the servers serve: other:1b, smollm2:135m)" in (
        proc.stderr
    )
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
def test_two_openai_servers_checked_end_to_end(tmp_path, sim_server):
    a, b = sim_server(ttft_ms=60, token_ms=5), sim_server(ttft_ms=60, token_ms=5)
    proc = check(
        tmp_path,
        *("--url", a.url, "--url", b.url, "--api", "openai"),
        *("--runs", "2", "--num-predict", "8", "--cores", "2", "--study", "check-sims"),
        *("--baseline", "solo"),  # two simulated servers: each has the whole machine
        *("--parallel", "1"),  # as the simulated servers serve: declared, not observed
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    root = tmp_path / "results" / "check-sims"
    study = yaml.safe_load((root / "study.yaml").read_text())
    assert [s["api"] for s in study["servers"]] == ["openai", "openai"]
    assert study["model"] == "smollm2:135m"  # the one model both serve
    assert [s["parallel"] for s in study["servers"]] == [1, 1]
    report = (root / "technical_report.md").read_text()
    assert "s1: parallel=1; s2: parallel=1" in report and "declare" in report
    out = proc.stdout
    assert "2 runs of 2 agents on 2 server(s), openai API, model smollm2:135m" in out
    true = float(re.search(r"true efficiency\s+([0-9.]+) %", out).group(1))
    assert true == pytest.approx(100.0, abs=8.0)  # two parallel servers: nothing is shared
    assert re.search(r"interference\s+[0-9.]+ % \(each agent alone", out)
    assert re.search(r"seed efficiency\s+[0-9.]+ %", out)
    assert re.search(r"TTFT\s+\d+ ms alone, \d+ ms together", out)
    assert f"full report: {Path('results') / 'check-sims' / 'technical_report.md'}" in out
    # the progress lines (Snakemake may measure run 2 first)
    assert re.search(r"\[1/2\] check run [12]: true efficiency [0-9.]+ %", proc.stderr)
    assert re.search(r"\[2/2\] check run [12]: .*; all runs measured", proc.stderr)
