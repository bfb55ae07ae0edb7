"""Pool state per host and server ownership on a cluster: a PID another host (or another Slurm
job) recorded is never inspected or signalled, and a cluster job's first Snakemake owns the
servers of all its job steps."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from dataclasses import asdict

import psutil
import pytest

from mabench.config import study_from_dict
from mabench.servers.ownership import OWNER_ENV, OWNER_SCOPE_ENV, claim_ownership, owner_scope
from mabench.servers.pool import Owner, ServerPool, ServerProc


@pytest.fixture
def sleeper():
    """A live process that must never be signalled by the pool."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield proc
    proc.kill()
    proc.wait()


@pytest.fixture
def study(fake_ollama):
    return study_from_dict(
        {
            "study": "hoststest",
            "backend": {"kind": "ollama", "ollama_binary": str(fake_ollama)},
            "servers": [{"name": "a"}],
            "agents": [{"name": "x", "workload": "collector", "server": "a"}],
            "configs": [{"id": "c1", "scenario": "chimera_homo"}],
        }
    )


def _other_hosts_state(state_dir, sleeper) -> str:
    """What a pool on host `node17` wrote: a dead owner and a 'server' whose PID is, here, our
    live sleeper (PIDs of another host mean nothing on this one)."""
    pid = sleeper.pid
    server = ServerProc("a", "http://127.0.0.1:1", 1, pid, psutil.Process(pid).create_time(), "x")
    state = {
        "study": "hoststest",
        "host": "node17",
        "backend": "ollama",
        "owner": {"pid": 2**22 + 17, "create_time": 1.0},  # dead everywhere: stale if read
        "servers": [asdict(server)],
    }
    state_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(state)
    (state_dir / "pool-node17.json").write_text(text)
    return text


def test_another_hosts_pool_state_is_never_read_or_signalled(tmp_path, study, sleeper):
    state_dir = tmp_path / "servers"
    theirs = _other_hosts_state(state_dir, sleeper)
    pool = ServerPool(study, state_dir, tmp_path / "logs")
    assert pool.state_path.name == f"pool-{socket.gethostname()}.json"
    assert pool.preflight() == []
    urls = pool.acquire()  # starts this host's server; a stale state would be stopped here
    assert set(urls) == {"a"}
    assert pool.release() == 1
    assert pool.release() == 0
    assert sleeper.poll() is None, "a PID recorded by another host was signalled"
    assert (state_dir / "pool-node17.json").read_text() == theirs


def test_the_invocation_always_owns_its_servers(monkeypatch):
    monkeypatch.setenv(OWNER_ENV, "1")
    monkeypatch.setenv(OWNER_SCOPE_ENV, owner_scope())
    claim_ownership(invocation=True)
    assert os.environ[OWNER_ENV] == str(os.getpid())
    assert Owner.current().pid == os.getpid()


def test_a_job_step_keeps_the_owner_of_its_cluster_job(monkeypatch, sleeper):
    """Inside Slurm job 42, the batch step's Snakemake claimed; a job step's Snakemake (same
    host, same job) keeps it, so the steps of one config share its servers."""
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv(OWNER_ENV, str(sleeper.pid))
    monkeypatch.setenv(OWNER_SCOPE_ENV, f"{socket.gethostname()}/42")
    claim_ownership(invocation=False)
    assert os.environ[OWNER_ENV] == str(sleeper.pid)
    assert Owner.current() == Owner.of(sleeper.pid)


@pytest.mark.parametrize("scope", ["node17/", "node17/42", "{host}/41", "{host}/"])
def test_a_pid_claimed_elsewhere_is_never_looked_up(monkeypatch, sleeper, scope):
    """A job's first Snakemake inherits the submitting host's claim (sbatch --export=ALL):
    another host or another job, so it claims for itself; and until it does, the foreign PID
    (here a live process of ours, by chance) is not taken for the owner."""
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv(OWNER_ENV, str(sleeper.pid))
    monkeypatch.setenv(OWNER_SCOPE_ENV, scope.format(host=socket.gethostname()))
    assert Owner.current().pid == os.getpid()
    claim_ownership(invocation=False)
    assert os.environ[OWNER_ENV] == str(os.getpid())
    assert os.environ[OWNER_SCOPE_ENV] == f"{socket.gethostname()}/42"
