"""llama.cpp's own server as a backend the pool starts: where the executable and the GGUF
come from, its command line, and the real ``llama-server`` under the pool (started with its
slots, restarted with other threads on the same port, stopped without leftovers)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import httpx
import psutil
import pytest

from mabench.config import study_from_dict
from mabench.measure.errors import ServerSetupError
from mabench.servers.embedded.registry import BUILTIN_MODEL, embedded_model_path
from mabench.servers.llama_server import LlamaServerSetup, find_binary, model_file
from mabench.servers.pool import ServerPool

BUILT = find_binary("llama-server", Path.cwd())
needs_binary = pytest.mark.skipif(
    BUILT is None, reason="no llama-server: `make setup` builds it (envs/build-llama-server.sh)"
)


def study(tmp_path: Path, **backend) -> object:
    return study_from_dict(
        {
            "study": "llamapool",
            "backend": {"kind": "llama_server", "startup_timeout_s": 60, **backend},
            "servers": [{"name": "a", "parallel": 2}, {"name": "b"}],
            "agents": [{"name": "x", "workload": "collector", "server": "a"}],
            "configs": [{"id": "c1", "scenario": "chimera_homo"}],
        },
        base_dir=tmp_path,
    )


def test_the_binary_is_a_path_beside_python_or_on_path(tmp_path, monkeypatch):
    exe = tmp_path / "bin" / "my-llama-server"
    exe.parent.mkdir()
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    assert find_binary("bin/my-llama-server", tmp_path) == exe  # relative to the study file
    assert find_binary("bin/missing", tmp_path) is None
    monkeypatch.setenv("PATH", str(exe.parent) + os.pathsep + os.environ["PATH"])
    assert find_binary("my-llama-server", tmp_path) == exe
    beside = Path(sys.executable).parent / "llama-server"
    if beside.is_file():  # make setup links the one it built beside this Python: it wins
        assert find_binary("llama-server", tmp_path) == beside


def test_the_model_file_is_the_builtin_under_any_name_or_a_declared_one(tmp_path):
    assert model_file(BUILTIN_MODEL, {}, tmp_path) == embedded_model_path()
    assert model_file("SmolLM2:135M", {}, tmp_path) == embedded_model_path()
    extra = {"tiny:1m": "models/tiny.gguf"}
    assert model_file("tiny:1m", extra, tmp_path) == (tmp_path / "models/tiny.gguf").resolve()
    assert model_file("other:7b", extra, tmp_path) is None


def test_the_command_line_sets_slots_context_per_slot_and_threads():
    setup = LlamaServerSetup(Path("/x/llama-server"), "m:1", Path("/m.gguf"), 4, 512, 2, Path("/s"))
    cmd = setup.command("127.0.0.1", 8080)
    flags = {
        flag: value
        for flag, value in zip(cmd[1:], [*cmd[2:], ""], strict=True)
        if flag.startswith("--") and not value.startswith("--")
    }
    assert flags["--parallel"] == "4" and flags["--ctx-size"] == "2048"  # 4 slots x 512
    assert flags["--threads"] == flags["--threads-batch"] == "2"
    assert flags["--alias"] == "m:1" and flags["--model"] == "/m.gguf"
    assert "--slots" in cmd and "--metrics" in cmd and flags["--slot-save-path"] == "/s"
    assert flags["--cache-ram"] == "0"  # no prompt cache beside the slots
    unset = LlamaServerSetup(
        Path("/x/llama-server"), "m:1", Path("/m.gguf"), 1, 512, None, Path("/s")
    )
    assert "--threads" not in unset.command("127.0.0.1", 8080)  # llama.cpp decides


def test_a_missing_binary_or_model_is_named_before_any_job(tmp_path):
    pool = ServerPool(
        study(tmp_path, llama_server_binary="./nowhere/llama-server"),
        tmp_path / "state",
        tmp_path / "logs",
    )
    (problem,) = pool.preflight()
    assert "backend.llama_server_binary" in problem and "make setup" in problem
    unknown = study_from_dict(
        {
            "study": "llamapool",
            "model": "other:7b",
            "backend": {"kind": "llama_server"},
            "servers": [{"name": "a"}],
            "agents": [{"name": "x", "workload": "collector", "server": "a"}],
            "configs": [{"id": "c1", "scenario": "chimera_homo"}],
        }
    )
    problems = ServerPool(unknown, tmp_path / "s2", tmp_path / "l2").preflight()
    if BUILT is not None:
        assert any("no GGUF file for model 'other:7b'" in p for p in problems)
    with pytest.raises(ServerSetupError, match="llama_server_binary"):
        pool.acquire()


@needs_binary
def test_the_pool_runs_llama_server_with_its_slots_and_restarts_it_on_its_port(tmp_path):
    s = study(tmp_path)
    pool = ServerPool(s, tmp_path / "state", tmp_path / "logs")
    try:
        urls = pool.acquire(s.config("c1"))
        assert list(urls) == ["a"]  # only the server the config uses
        procs = pool.processes()
        first = procs["a"]
        slots = httpx.get(urls["a"] + "/slots", timeout=10).json()
        assert len(slots) == 2  # parallel: 2
        models = httpx.get(urls["a"] + "/v1/models", timeout=10).json()
        assert BUILTIN_MODEL in [m["id"] for m in models["data"]]
        # another thread count: the same server on the same port, a new process
        again = pool.acquire(s.config("c1"), threads=1)
        assert again == urls
        second = pool.processes()["a"]
        assert (second.port, second.threads) == (first.port, 1)
        assert second.pid != first.pid and not first.alive()
        cmdline = " ".join(c.cmdline()[0] for c in psutil.Process(second.pid).children())
        assert "llama-server" in cmdline
    finally:
        assert pool.release() >= 1
    with pytest.raises(httpx.ConnectError):
        httpx.get(urls["a"] + "/health", timeout=2)
