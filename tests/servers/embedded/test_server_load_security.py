"""The embedded server under load, and the security guarantees of the whole project."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

import httpx
import psutil
import pytest
from embedded_support import MODEL

ROOT = Path(__file__).resolve().parents[3]
CLIENTS = 32


def _hammer(url: str, n: int) -> list[tuple[int, dict]]:
    """n clients at once, each one streamed chat; returns (status, last JSON object) each."""
    results: list[tuple[int, dict]] = [(0, {})] * n
    gate = threading.Barrier(n)
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Say hi."}],
        "options": {"num_predict": 4, "seed": 1},
    }

    def one(i: int) -> None:
        gate.wait()
        with (
            httpx.Client(base_url=url, timeout=300) as c,
            c.stream("POST", "/api/chat", json=body) as r,
        ):
            lines = [json.loads(line) for line in r.iter_lines() if line.strip()]
            results[i] = (r.status_code, lines[-1] if lines else {})

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    return results


def _rss(pid: int) -> int:
    return psutil.Process(pid).memory_info().rss


@pytest.mark.timeout(600)
@pytest.mark.parametrize("max_queue", [512, 8], ids=["queue-512", "queue-8"])
def test_32_concurrent_clients_complete_or_get_503(start_server, max_queue):
    server = start_server(
        "--num-thread", "1", "--max-queue", str(max_queue), name=f"load-{max_queue}"
    )
    with httpx.Client(base_url=server.url, timeout=120) as http:
        http.post("/api/generate", json={"model": MODEL, "prompt": ""})  # load once
    before = _rss(server.pid)
    results = _hammer(server.url, CLIENTS)
    completed = [last for status, last in results if status == 200]
    refused = [last for status, last in results if status == 503]
    assert len(completed) + len(refused) == CLIENTS, results
    assert all(last.get("done") is True and last.get("eval_count", 0) > 0 for last in completed)
    assert all(
        last == {"error": last["error"]} and "maximum pending requests" in last["error"]
        for last in refused
    )
    if max_queue >= CLIENTS:
        assert not refused
    else:
        assert refused and len(completed) >= max_queue  # the queue held what it could
    assert server.running()
    with httpx.Client(base_url=server.url, timeout=60) as http:
        assert http.get("/").text == "Ollama is running"
    # memory stays bounded: the queue holds requests, not models or buffers that grow
    assert _rss(server.pid) - before < 150 * 2**20


def test_binds_loopback_by_default(embedded_server):
    conns = [
        c
        for c in psutil.Process(embedded_server.pid).net_connections()
        if c.status == psutil.CONN_LISTEN
    ]
    assert conns and {c.laddr.ip for c in conns} == {"127.0.0.1"}


@pytest.mark.parametrize(
    "name", ["/etc/passwd", "../../etc/passwd", "SMOLLM2-135M-INSTRUCT.Q4_1.GGUF"]
)
def test_model_names_are_registry_keys_never_paths(http, model_path, name):
    for candidate in (name, str(model_path)):
        r = http.post("/api/generate", json={"model": candidate, "prompt": "hi", "stream": False})
        assert r.status_code == 404
        assert r.json() == {"error": f"model '{candidate}' not found"}


def test_no_shell_anywhere_config_values_could_reach():
    """Processes are started from argument lists; no rule uses `shell:`; nothing calls a shell."""
    offenders = []
    for path in [
        *ROOT.glob("src/**/*.py"),
        *ROOT.glob("scripts/*.py"),
        *ROOT.glob("workflow/**/*.smk"),
        ROOT / "Snakefile",
    ]:
        text = path.read_text()
        for pattern in (
            r"shell\s*=\s*True",
            r"os\.system\(",
            r"os\.popen\(",
            r"^\s*shell:",
            r"subprocess\.getoutput",
        ):
            if re.search(pattern, text, flags=re.M):
                offenders.append(f"{path.relative_to(ROOT)}: {pattern}")
    assert offenders == []
