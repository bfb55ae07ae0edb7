"""The job host on real processes: a simulated server pair, a host under its watchdog, and
rule-script clients as subprocesses (what Snakemake starts)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from mabench.jobs.client import JobHostError, forward
from mabench.jobs.launch import answers, ensure_host, stop_host
from mabench.jobs.request import JobRequest, address
from mabench.servers.net import wait_until
from mabench.servers.ownership import OWNER_ENV, OWNER_SCOPE_ENV, owner_scope

CLIENT = (
    "import json, sys\n"
    "from mabench.jobs.client import run_job\n"
    "from mabench.jobs.request import JobRequest\n"
    "run_job(JobRequest(**json.loads(sys.argv[1])))\n"
)


@pytest.fixture
def owner(tmp_path):
    """A stand-in for the Snakemake invocation that owns the host: a process that lives."""
    proc = subprocess.Popen(["sleep", "600"])
    yield psutil.Process(proc.pid)
    stop_host(proc.pid)
    proc.kill()
    proc.wait()


def study_config(urls: list[str], **extra) -> dict:
    return {
        "study": "jobs",
        "runs": 2,
        "backend": {"kind": "external"},
        "servers": [{"name": n, "url": u} for n, u in zip("ab", urls, strict=True)],
        "workloads": {
            "collector": {"calls": [{"prompt": "collector_analyse.md.j2", "num_predict": 4}]},
            "insight": {"calls": [{"prompt": "insight_insights.md.j2", "num_predict": 4}]},
        },
        "configs": [{"id": "c1", "scenario": "chimera_homo"}],
        **extra,
    }


def run_request(config: dict, run: int) -> dict:
    return {
        "kind": "run",
        "config": config,
        "wildcards": {"study": "jobs", "config": "c1", "run": str(run)},
        "output": [f"results/jobs/runs/c1/run_{run}.json"],
        "log": [f"results/jobs/logs/runs/c1/run_{run}.log"],
    }


def client(request: dict, cwd: Path, owner_pid: int, **popen) -> subprocess.Popen[str]:
    """A rule script's process for ``request``, under the invocation ``owner_pid``."""
    env = {**os.environ, OWNER_ENV: str(owner_pid), OWNER_SCOPE_ENV: owner_scope()}
    return subprocess.Popen(
        [sys.executable, "-c", CLIENT, json.dumps(request)],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def host_jobs(log: Path) -> list[str]:
    return [line for line in log.read_text().splitlines() if " job " in line]


def test_a_job_in_the_host_does_what_its_own_process_would(tmp_path, sim_server, owner):
    a, b = sim_server(ttft_ms=30, token_ms=2), sim_server(ttft_ms=30, token_ms=2)
    config = study_config([a.url, b.url])

    # No host yet: the first job runs in its own process, then starts the host.
    first = client(run_request(config, 1), tmp_path, owner.pid)
    _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert answers(address(owner.pid))
    host_log = tmp_path / "results" / "jobs" / "logs" / "servers"
    (log,) = host_log.glob("*/jobs.log")
    assert host_jobs(log) == []

    # The next job runs in the host: same record, same log, its progress on the client's stderr.
    second = client(run_request(config, 2), tmp_path, owner.pid)
    _, err = second.communicate(timeout=120)
    assert second.returncode == 0, err
    (line,) = host_jobs(log)
    assert "run job" in line and "c1 2" in line
    assert "c1 run 2: true efficiency" in err
    records = [
        json.loads((tmp_path / f"results/jobs/runs/c1/run_{i}.json").read_text()) for i in (1, 2)
    ]
    assert [r["run_index"] for r in records] == [1, 2]
    assert records[0].keys() == records[1].keys()
    assert records[0]["environment"] == {
        **records[1]["environment"],
        "config_hash": records[0]["environment"]["config_hash"],
    }
    run_log = (tmp_path / "results/jobs/logs/runs/c1/run_2.log").read_text()
    assert "c1 run 2: concurrent phase" in run_log or "c1 run 2: solo phase" in run_log


def test_a_failing_job_reports_its_status_and_traceback_to_the_client(tmp_path, owner):
    assert ensure_host(owner.pid, owner.create_time(), tmp_path / "host.log")
    request = {
        "kind": "unload",
        "config": study_config(["http://127.0.0.1:9", "http://127.0.0.1:10"]),
        "wildcards": {"study": "jobs", "config": "c1"},
        "input": {"servers": str(tmp_path / "missing.json")},
        "output": ["results/jobs/unload/c1.json"],
        "log": ["results/jobs/logs/unload/c1.log"],
    }
    proc = client(request, tmp_path, owner.pid)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "Traceback" in err and "ServerSetupError" in err
    assert "the rule script failed" in (tmp_path / request["log"][0]).read_text()
    assert host_jobs(tmp_path / "host.log"), "the job did not run in the host"
    assert not (tmp_path / request["output"][0]).exists()


def test_a_client_that_goes_away_takes_its_job_with_it(tmp_path, sim_server, owner):
    slow = [sim_server(ttft_ms=4000, token_ms=5) for _ in range(2)]
    config = study_config([s.url for s in slow])
    log = tmp_path / "host.log"
    assert ensure_host(owner.pid, owner.create_time(), log)
    proc = client(run_request(config, 1), tmp_path, owner.pid)
    run_log = tmp_path / "results/jobs/logs/runs/c1/run_1.log"
    assert wait_until(lambda: run_log.exists() and "phase" in run_log.read_text(), 60)
    (line,) = host_jobs(log)
    job_pid = int(line.split(" job ")[1].split(":")[0])
    proc.send_signal(signal.SIGKILL)  # what Snakemake does to a job it cancels
    proc.wait()
    # The host interrupts the job at once (KeyboardInterrupt), and kills it after 5 s.
    assert wait_until(lambda: not psutil.pid_exists(job_pid), 20), "the job outlived its client"
    assert not list((tmp_path / "results/jobs/runs").rglob("*.json"))
    assert not list((tmp_path / "results/jobs/runs").rglob(".*.tmp"))
    assert not (tmp_path / "results/jobs/failures").exists(), "an interrupt is not a failure"
    assert answers(address(owner.pid)), "the host should serve the next job"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
def test_another_user_is_refused(tmp_path, owner):
    """A job host runs jobs as its user: another user's process must never get one run."""
    log = tmp_path / "host.log"
    assert ensure_host(owner.pid, owner.create_time(), log)
    where = address(owner.pid)
    request = JobRequest(**run_request(study_config(["http://127.0.0.1:9"] * 2), 1))
    pid = os.fork()
    if pid == 0:  # the other user: this process, forked, as nobody
        status = 2
        try:
            os.setgid(65534)
            os.setuid(65534)
            forward(request, where)
        except JobHostError:
            status = 0
        finally:
            os._exit(status)
    _, wait_status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(wait_status) == 0, "the other user's job got an answer"
    assert "refused a connection from another user" in log.read_text()
    assert host_jobs(log) == []


def test_the_host_dies_with_its_owner_and_stops_when_asked(tmp_path):
    for how in ("owner dies", "stop_host"):
        proc = subprocess.Popen(["sleep", "600"])
        owner = psutil.Process(proc.pid)
        where = address(owner.pid)
        assert ensure_host(owner.pid, owner.create_time(), tmp_path / "host.log")
        if how == "owner dies":
            proc.kill()
        else:
            assert stop_host(owner.pid)
        assert wait_until(lambda w=where: not answers(w), 15), how
        proc.kill()
        proc.wait()


def test_a_request_names_its_kind():
    with pytest.raises(ValueError, match="unknown job kind 'report'"):
        JobRequest(kind="report", config={}, wildcards={}, output=[], log=[])
