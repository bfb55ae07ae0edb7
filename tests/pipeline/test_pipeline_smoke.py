"""The smoke study end to end: real Snakemake, real embedded server, real model."""

from __future__ import annotations

import itertools
import json
import re
from datetime import datetime
from pathlib import Path

import duckdb
import pandas as pd
import psutil
import pyarrow.parquet as pq
import pytest
from snake import STUDIES, planned_jobs, snakemake

from mabench.analysis.tables import SCHEMAS
from mabench.config import load_study
from mabench.measure.baseline import slower_alone
from mabench.measure.records import read_record

pytestmark = pytest.mark.slow

STUDY = load_study(STUDIES / "smoke.yaml")


def test_every_output_exists(smoke_dir):
    workdir, _ = smoke_dir
    out = workdir / "results" / "smoke"
    for cid in STUDY.config_ids:
        assert (out / "unload" / f"{cid}.json").is_file()
        for run in range(1, STUDY.runs + 1):
            record = read_record(out / "runs" / cid / f"run_{run}.json")  # schema-checked
            assert record.isolation.verified
            assert record.metrics.true_efficiency is not None
            assert all(c.error is None and c.server_metrics.eval_count > 0 for c in record.calls)
            # the conditions the run proves: its servers' threads, its CPUs, its checks
            assert record.environment.cpus_available >= 1
            assert all(s.threads is not None for s in record.topology.servers)
            assert record.validity.isolation_after.verified
            assert record.validity.work.matched and record.validity.sequential_work.matched
            # a sequential baseline the machine did not give (beside other work) is flagged
            slower = slower_alone(record.metrics.agents)
            assert record.validity.flags == (["baseline_slower"] if slower else [])
            assert all(c.reconnects == 0 for c in record.calls)
            assert (out / "logs" / "runs" / cid / f"run_{run}.log").is_file()
    for table in ("runs", "agents", "calls", "failures"):
        assert (out / "tables" / f"{table}.parquet").is_file()
    assert (out / "stats" / "summary.json").is_file()
    assert any((out / "figures").glob("*.png"))
    report = (out / "technical_report.md").read_text()
    assert report.startswith("# Smoke study")
    assert "True efficiency" in report or "true efficiency" in report
    latency = report.split("## Latency distributions", 1)[1].split("\n## ", 1)[0]
    assert "P99 (ms)" in latency and "| concurrent | ITL |" in latency
    for png in re.findall(r"\]\((figures/[^)]+\.png)\)", report):
        assert (out / png).is_file(), png


def test_parquet_tables_follow_the_documented_schema(smoke_dir):
    workdir, _ = smoke_dir
    tables = workdir / "results" / "smoke" / "tables"
    for name, schema in SCHEMAS.items():
        table = pq.read_table(tables / f"{name}.parquet")
        assert table.schema.equals(schema, check_metadata=False), name
    n_runs = len(STUDY.configs) * STUDY.runs
    assert (
        duckdb.sql(f"select count(*) from '{tables / 'runs.parquet'}'").fetchall()[0][0] == n_runs
    )
    calls = pd.read_parquet(tables / "calls.parquet")
    # runs x phases x agents x calls: both configs split the machine between two servers, so
    # every run measures the sequential baseline too
    runs = pd.read_parquet(tables / "runs.parquet")
    assert set(runs["baseline"]) == {"sequential"}
    assert len(calls) == n_runs * 3 * 2 * 2
    assert set(calls["phase"]) == {"sequential", "solo", "concurrent"}
    # every text chunk's arrival is recorded: one gap fewer than chunks, TPOT per call
    assert (calls["n_text_chunks"] >= 1).all() and calls["tpot_ms"].notna().all()
    assert (calls["itl_ms"].map(len) == calls["n_text_chunks"] - 1).all()
    assert runs["true_efficiency"].notna().all() and runs["seed_efficiency"].notna().all()
    assert runs["interference_efficiency"].notna().all()
    assert (runs["n_errors"] == 0).all()


def test_no_two_benchmark_jobs_overlapped(smoke_dir):
    """Every run and unload interval (from the recorded timestamps) is disjoint from the others."""
    workdir, _ = smoke_dir
    out = workdir / "results" / "smoke"
    intervals = []
    for path in (out / "runs").glob("*/*.json"):
        r = json.loads(path.read_text())
        intervals.append(
            (
                datetime.fromisoformat(r["started_at"]),
                datetime.fromisoformat(r["finished_at"]),
                path.name,
            )
        )
    for path in (out / "unload").glob("*.json"):
        u = json.loads(path.read_text())
        intervals.append(
            (
                datetime.fromisoformat(u["started_at"]),
                datetime.fromisoformat(u["finished_at"]),
                path.name,
            )
        )
    intervals.sort()
    assert len(intervals) == len(STUDY.configs) * (STUDY.runs + 1)
    for (_, end, a), (start, _, b) in itertools.pairwise(intervals):
        assert end <= start, f"{a} overlapped {b}"


def _server_ports(workdir: Path) -> list[int]:
    ports = []
    for log in (workdir / "results" / "smoke" / "logs" / "servers").glob("*/*.log"):
        ports += [int(p) for p in re.findall(r"starting: .* --port (\d+)", log.read_text())]
    return ports


def _leftovers(workdir: Path, ports: list[int]) -> list[str]:
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        ours = "mabench.servers.supervise" in cmd or "mabench.servers.embedded" in cmd
        if ours and any(f"--port {p}" in cmd for p in ports):
            found.append(f"{proc.info['pid']}: {cmd}")
    return found


def test_no_server_process_remains(smoke_dir):
    workdir, _ = smoke_dir
    ports = _server_ports(workdir)
    assert len(ports) == 2  # both servers were started, once each
    assert _leftovers(workdir, ports) == []
    assert not list((workdir / "results" / "smoke" / "servers").glob("pool-*.json"))


def test_server_start_up_is_a_step_of_the_dag(tmp_path):
    """`snakemake --dag` declares start_servers -> unload -> run for every config."""
    dag = snakemake(tmp_path, "--dag", configfile=STUDIES / "smoke.yaml", check=True).stdout
    label = dict(re.findall(r"^\s*(\d+)\[label = \"(\w+)", dag, flags=re.M))
    edges = {(label[a], label[b]) for a, b in re.findall(r"^\s*(\d+) -> (\d+)", dag, flags=re.M)}
    assert {("start_servers", "unload"), ("unload", "run"), ("run", "aggregate")} <= edges
    assert list(label.values()).count("start_servers") == len(STUDY.configs)
    assert not (tmp_path / "results").exists()  # --dag runs nothing


def test_server_start_up_is_recorded_with_each_config(smoke_dir):
    workdir, _ = smoke_dir
    out = workdir / "results" / "smoke"
    assert not list((out / "servers").glob("test*.json")), "temporary descriptions are removed"
    started = []
    for cid in STUDY.config_ids:
        up = json.loads((out / "unload" / f"{cid}.json").read_text())["server_start"]
        assert up["host"] and up["checked_at"]
        for s in up["servers"]:
            assert s["url"].startswith("http://127.0.0.1:")
            assert s["version"] and s["model_digest"] and s["model_size"] > 0
            assert s["models"] == ["smollm2:135m"] and s["threads"] >= 1
            started += [s["name"]] if s["started"] else []
        assert (out / "logs" / "start_servers" / f"{cid}.log").is_file()
    assert sorted(started) == ["a", "b"]  # started once, then reused by the next config


def test_deleting_one_record_replans_exactly_that_run(smoke_dir):
    workdir, _ = smoke_dir
    record = workdir / "results" / "smoke" / "runs" / "test108" / "run_2.json"
    saved = record.read_bytes()
    record.unlink()
    try:
        proc = snakemake(workdir, "-n", configfile=STUDIES / "smoke.yaml", check=True)
        assert planned_jobs(proc.stdout) == {
            "run": 1,
            "aggregate": 1,
            "statistics": 1,
            "figures": 1,
            "hosts": 1,
            "report": 1,
            "all": 1,
        }
        assert "results/smoke/runs/test108/run_2.json" in proc.stdout
        assert "run_1.json" not in re.sub(r"input: .*", "", proc.stdout)
    finally:
        record.write_bytes(saved)


def test_changing_a_template_rerenders_only_the_report(smoke_dir):
    workdir, _ = smoke_dir
    template = workdir / "templates" / "sections" / "methodology.md.j2"
    original = template.read_text()
    template.write_text(original + "\nOne more sentence from the template.\n")
    try:
        proc = snakemake(workdir, "-n", configfile=STUDIES / "smoke.yaml", check=True)
        assert planned_jobs(proc.stdout) == {"report": 1, "all": 1}
        snakemake(workdir, configfile=STUDIES / "smoke.yaml", check=True)
        report = (workdir / "results" / "smoke" / "technical_report.md").read_text()
        assert "One more sentence from the template." in report
    finally:
        template.write_text(original)


def test_changing_report_settings_never_remeasures(smoke_dir, tmp_path):
    workdir, _ = smoke_dir
    text = (
        (STUDIES / "smoke.yaml")
        .read_text()
        .replace('title: "Smoke study"', 'title: "Another title"')
    )
    assert "Another title" in text
    changed = tmp_path / "smoke.yaml"
    changed.write_text(text)
    proc = snakemake(workdir, "-n", configfile=changed, check=True)
    jobs = planned_jobs(proc.stdout)
    assert "run" not in jobs and "unload" not in jobs and "aggregate" not in jobs
    assert jobs.get("report") == 1


def test_snakemake_html_report(smoke_dir):
    workdir, _ = smoke_dir
    proc = snakemake(
        workdir, "--report", "report.html", configfile=STUDIES / "smoke.yaml", check=True
    )
    html = (workdir / "report.html").read_text(errors="replace")
    assert "technical_report.md" in html
    assert "efficiency_distribution.png" in html
    assert "start_servers" in html  # the rule graph shows server start-up
    assert proc.returncode == 0
