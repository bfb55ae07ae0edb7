"""The server pool: lazy start, reuse, release, stale and foreign owners, ports, watchdog."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import psutil
import pytest

from mabench.config import study_from_dict
from mabench.measure.environment import available_cpus
from mabench.measure.errors import ServerSetupError
from mabench.servers.embedded.registry import embedded_model_path
from mabench.servers.net import free_port, wait_until
from mabench.servers.pool import Owner, ServerPool


@pytest.fixture(autouse=True)
def _fake_ollama(fake_ollama, monkeypatch):
    monkeypatch.setenv("TEST_FAKE_OLLAMA", str(fake_ollama))


def study(servers=None, **backend):
    return study_from_dict(
        {
            "study": "pooltest",
            "backend": {
                "kind": "ollama",
                "ollama_binary": os.environ["TEST_FAKE_OLLAMA"],
                "startup_timeout_s": 30,
                **backend,
            },
            "servers": servers or [{"name": "a"}, {"name": "b"}],
            "agents": [{"name": "x", "workload": "collector", "server": "a"}],
            "configs": [{"id": "c1", "scenario": "chimera_homo"}],
        }
    )


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def tree(pid: int) -> list[int]:
    proc = psutil.Process(pid)
    return [pid, *(c.pid for c in proc.children(recursive=True))]


def test_start_reuse_release(tmp_path):
    pool = ServerPool(study(), tmp_path / "state", tmp_path / "logs")
    urls = pool.acquire()
    assert set(urls) == {"a", "b"}
    for url in urls.values():
        assert httpx.get(url + "/").text == "Ollama is running"
    state = pool._read()[1]
    pids = [p for s in state.values() for p in tree(s.pid)]
    assert pool.acquire() == urls  # same owner: reused, nothing restarted
    assert [s.pid for s in pool._read()[1].values()] == [s.pid for s in state.values()]
    assert pool.release() == 2
    assert wait_until(lambda: all(gone(p) for p in pids), 10)
    assert not pool.state_path.exists()
    assert (tmp_path / "logs" / "a.log").read_text().count("starting:") == 1


def test_ollama_servers_start_with_the_concurrency_settings_the_record_shows(tmp_path):
    s = study(num_parallel=2, keep_alive="10m")
    pool = ServerPool(s, tmp_path / "state", tmp_path / "logs")
    pool.acquire()
    try:
        for name, proc in pool.processes().items():
            env = psutil.Process(proc.pid).children()[0].environ()  # the `ollama serve`
            wanted = s.server_settings(name)
            assert wanted == {
                "OLLAMA_NUM_PARALLEL": "2",
                "OLLAMA_MAX_LOADED_MODELS": "1",
                "OLLAMA_KEEP_ALIVE": "10m",
            }
            assert {k: env.get(k) for k in wanted} == wanted
    finally:
        pool.release()


def test_a_live_foreign_owner_is_refused(tmp_path):
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        mine = ServerPool(study(), tmp_path / "state", tmp_path / "logs", owner=Owner.of(other.pid))
        mine.acquire()
        theirs = ServerPool(study(), tmp_path / "state", tmp_path / "logs")
        with pytest.raises(ServerSetupError, match=f"belong to a running process, pid {other.pid}"):
            theirs.acquire()
        assert theirs.release() == 0  # never stops servers of a live owner
        assert all(s.alive() for s in mine._read()[1].values())
    finally:
        other.kill()
        other.wait()
    mine.release()


def test_servers_die_with_their_owner_and_stale_state_is_cleaned(tmp_path):
    script = textwrap.dedent(
        f"""
        import os, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_pool import study
        from mabench.servers.pool import ServerPool
        pool = ServerPool(study(), {str(tmp_path / "state")!r}, {str(tmp_path / "logs")!r})
        pool.acquire()
        os._exit(0)  # dies without releasing: a crashed or killed Snakemake
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    pool = ServerPool(study(), tmp_path / "state", tmp_path / "logs")
    stale = pool._read()[1]
    # the watchdog stops each server once its owner is gone
    assert wait_until(lambda: all(not s.alive() for s in stale.values()), 15)
    for s in stale.values():
        assert wait_until(lambda s=s: not _answers(s.url), 10)
    urls = pool.acquire()  # stale state is replaced, not reused
    assert all(_answers(u) for u in urls.values())
    assert pool.release() == 2


def _answers(url: str) -> bool:
    try:
        return httpx.get(url + "/", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_a_taken_port_is_a_clear_error_or_falls_back(tmp_path):
    port = free_port()
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", port))
    blocker.listen()
    try:
        pool = ServerPool(study([{"name": "a", "port": port}]), tmp_path / "s1", tmp_path / "l1")
        with pytest.raises(ServerSetupError, match=f"port {port} of server 'a' is already in use"):
            pool.acquire()
        fallback = ServerPool(
            study([{"name": "a", "port": port}], port_fallback=True),
            tmp_path / "s2",
            tmp_path / "l2",
        )
        urls = fallback.acquire()
        assert not urls["a"].endswith(f":{port}")
        fallback.release()
    finally:
        blocker.close()


def test_a_dead_server_is_restarted(tmp_path):
    pool = ServerPool(study([{"name": "a"}]), tmp_path / "state", tmp_path / "logs")
    url = pool.acquire()["a"]
    first = pool._read()[1]["a"]
    for pid in reversed(tree(first.pid)):
        psutil.Process(pid).kill()
    assert wait_until(lambda: not _answers(url), 5)
    url2 = pool.acquire()["a"]
    assert _answers(url2)
    assert pool._read()[1]["a"].pid != first.pid
    pool.release()


def test_a_server_that_cannot_start_names_its_log(tmp_path):
    s = study([{"name": "a"}], ollama_binary="/bin/false", startup_timeout_s=5)
    with pytest.raises(ServerSetupError, match="exited with code 1; last lines of"):
        ServerPool(s, tmp_path / "state", tmp_path / "logs").acquire()
    time.sleep(0.1)


def external_openai(url: str, tmp: Path, **server) -> ServerPool:
    spec = study_from_dict(
        {
            "study": "pooltest",
            "backend": {"kind": "external"},
            "servers": [{"name": "a", "url": url, "api": "openai", **server}],
            "agents": [{"name": "x", "workload": "collector", "server": "a"}],
            "configs": [{"id": "c1", "scenario": "chimera_homo"}],
        }
    )
    return ServerPool(spec, state_dir=tmp, log_dir=tmp)


def test_external_openai_servers_are_checked_through_their_api_and_key(
    sim_server, monkeypatch, tmp_path
):
    monkeypatch.setenv("SIM_KEY", "sk-pool-1")
    srv = sim_server(api_key_env="SIM_KEY")
    monkeypatch.delenv("POOL_KEY", raising=False)
    pool = external_openai(srv.url, tmp_path, api_key_env="POOL_KEY")
    (problem,) = pool.preflight()
    assert "servers[0].api_key_env" in problem and "POOL_KEY" in problem
    monkeypatch.setenv("POOL_KEY", "sk-wrong")
    assert pool.preflight() == []
    with pytest.raises(ServerSetupError, match=r"refuses GET /v1/models \(HTTP 401\).*POOL_KEY"):
        pool.acquire()
    monkeypatch.setenv("POOL_KEY", "sk-pool-1")
    assert pool.acquire() == {"a": srv.url}
    with pytest.raises(ServerSetupError, match="it wants an API key"):
        external_openai(srv.url, tmp_path).acquire()
    with pytest.raises(ServerSetupError, match="does not answer GET /v1/models"):
        external_openai(f"http://127.0.0.1:{free_port()}", tmp_path).acquire()


def test_an_embedded_server_registers_only_the_models_the_study_uses(tmp_path):
    # Each registered GGUF is hashed before the server answers: a study that uses its own
    # model registers that one only, not the built-in nor the unused extra model.
    gguf = embedded_model_path()
    models = {"mine:1b": str(gguf), "unused:7b": str(gguf)}

    def flags(model: str) -> list[str]:
        s = study_from_dict(
            {
                "study": "embeddedcmd",
                "model": model,
                "backend": {"kind": "embedded", "models": models},
                "configs": [{"id": "c1", "scenario": "chimera_homo"}],
            }
        )
        cmd, _ = ServerPool(s, tmp_path / "state", tmp_path / "logs").command(
            s.servers[0], "127.0.0.1", 1234
        )
        return cmd[cmd.index("--num-thread") + 2 :]

    assert flags("mine:1b") == ["--model", f"mine:1b={gguf}", "--no-builtin"]
    assert flags("smollm2:135m") == []  # the built-in only
    assert flags("absent:3b") == []  # nothing used is registered: the check step names it


def _server_threads(pool: ServerPool, name: str) -> int:
    """The --num-thread the server process (the supervisor's child) really runs with."""
    proc = psutil.Process(pool.processes()[name].pid).children()[0]
    cmd = proc.cmdline()
    return int(cmd[cmd.index("--num-thread") + 1])


@pytest.mark.timeout(240)
def test_each_config_gets_the_cpus_divided_among_the_servers_it_uses(tmp_path):
    # Real embedded servers. A one-server config gets every CPU this process may use; a
    # two-server config restarts it with half (and starts the second); back to one server,
    # it gets them all again while the other server stays up, idle.
    s = study_from_dict(
        {
            "study": "threads",
            "backend": {"kind": "embedded", "startup_timeout_s": 120},
            "configs": [
                {
                    "id": "one",
                    "scenario": "chimera_homo",
                    "agents": [
                        {"name": "x", "workload": "collector", "server": "a"},
                        {"name": "y", "workload": "insight", "server": "a"},
                    ],
                },
                {"id": "two", "scenario": "chimera_homo"},
            ],
        }
    )
    cpus = available_cpus()
    pool = ServerPool(s, tmp_path / "state", tmp_path / "logs")
    try:
        assert pool.threads_for(s.config("one")) == cpus
        assert pool.threads_for(s.config("two")) == max(1, cpus // 2)
        assert set(pool.acquire(s.config("one"))) == {"a"}
        assert pool.started == ["a"] and _server_threads(pool, "a") == cpus
        assert set(pool.acquire(s.config("two"))) == {"a", "b"}
        restarted = ["a", "b"] if max(1, cpus // 2) != cpus else ["b"]
        assert pool.started == restarted
        assert [_server_threads(pool, n) for n in "ab"] == [max(1, cpus // 2)] * 2
        assert set(pool.acquire(s.config("one"))) == {"a", "b"}  # b: up and idle
        assert _server_threads(pool, "a") == cpus
        assert {n: p.threads for n, p in pool.processes().items()} == {
            "a": cpus,
            "b": max(1, cpus // 2),
        }
    finally:
        pool.release()
