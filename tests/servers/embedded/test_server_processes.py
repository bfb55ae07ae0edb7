"""Several server processes: parallel generation, shutdown, queue limits, startup errors."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import ollama
import psutil
import pytest
from embedded_support import COUNTING, FEW, LONG, MODEL, ndjson

from mabench.servers.embedded.scheduler import QUEUE_FULL_MESSAGE
from mabench.servers.net import free_port, wait_until


@pytest.mark.timeout(240)
def test_two_servers_generate_at_the_same_time(start_server) -> None:
    servers = [start_server("--num-thread", "1", name=f"parallel-{i}") for i in range(2)]
    for s in servers:  # load first, so that the timed part is generation only
        ollama.Client(host=s.url).generate(model=MODEL, prompt="", keep_alive=-1)
    spans: dict[int, tuple[float, float]] = {}
    cpu: dict[int, float] = {}
    barrier = threading.Barrier(2)

    def run(i: int) -> None:
        client = ollama.Client(host=servers[i].url, timeout=180)
        proc = psutil.Process(servers[i].pid)
        barrier.wait()
        t0, c0 = time.monotonic(), sum(proc.cpu_times()[:2])
        r = client.generate(
            model=MODEL,
            prompt=COUNTING,
            raw=True,
            options={"num_predict": 120, "temperature": 0, "num_thread": 1},
        )
        t1, c1 = time.monotonic(), sum(proc.cpu_times()[:2])
        assert r.done and r.eval_count > 0
        spans[i] = (t0, t1)
        cpu[i] = (c1 - c0) / (t1 - t0)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(spans) == 2, "a generation failed"
    (a0, a1), (b0, b1) = spans[0], spans[1]
    overlap = min(a1, b1) - max(a0, b0)
    assert overlap > 0.5 * min(a1 - a0, b1 - b0), spans  # they really ran side by side
    for i, share in cpu.items():  # one llama.cpp thread: about one core, not two
        assert share < 1.6, (i, share)


@pytest.mark.timeout(120)
def test_sigterm_during_generation_exits_0_within_5s(start_server) -> None:
    server = start_server(name="sigterm")
    body = {"model": MODEL, "prompt": COUNTING, "raw": True, "options": LONG}
    lines: list[dict] = []
    with (
        httpx.Client(base_url=server.url, timeout=60) as http,
        http.stream("POST", "/api/generate", json=body) as r,
    ):
        stream = ndjson(r)
        lines.append(next(stream))  # generating now
        t0 = time.monotonic()
        server.terminate()
        lines += list(stream)
        code = server.wait(10)
        elapsed = time.monotonic() - t0
    assert code == 0
    assert elapsed < 5.0
    # a failure while streaming is one NDJSON error line, then the end
    assert lines[-1] == {"error": "server is shutting down"}
    assert server.log_path.read_text().count("Application shutdown complete") == 1


@pytest.mark.timeout(120)
def test_sigint_when_idle_exits_0(start_server) -> None:
    import signal

    server = start_server(name="sigint")
    ollama.Client(host=server.url).generate(model=MODEL, prompt="Hi", options=FEW)
    t0 = time.monotonic()
    server.send_signal(signal.SIGINT)
    assert server.wait(10) == 0
    assert time.monotonic() - t0 < 5.0


@pytest.mark.timeout(180)
def test_queue_full_is_503_and_a_disconnect_frees_the_model(start_server) -> None:
    server = start_server("--max-queue", "1", name="queue")
    long_body = {"model": MODEL, "prompt": COUNTING, "raw": True, "options": LONG}
    short_body = {"model": MODEL, "prompt": "Hi", "stream": False, "options": FEW}
    queued: dict[str, object] = {}

    def queued_request() -> None:
        with httpx.Client(base_url=server.url, timeout=120) as c:
            r = c.post("/api/generate", json=short_body)
            queued["status"], queued["done_at"] = r.status_code, time.monotonic()

    with httpx.Client(base_url=server.url, timeout=60) as http:
        with http.stream("POST", "/api/generate", json=long_body) as r:
            stream = ndjson(r)
            next(stream)  # A is generating
            waiter = threading.Thread(target=queued_request)
            waiter.start()  # B waits for the model
            time.sleep(1.0)
            assert "status" not in queued, "B should wait while A generates"
            full = http.post("/api/generate", json=short_body)  # C: the queue holds 1
            assert full.status_code == 503
            assert full.json() == {"error": QUEUE_FULL_MESSAGE}
            for _ in range(3):
                next(stream)  # A still streams
            closed_at = time.monotonic()
        # A's client is gone: its generation stops at the next token and B runs
        waiter.join(60)
        assert queued.get("status") == 200
        assert queued["done_at"] - closed_at < 20  # A alone would need minutes
        assert http.get("/").status_code == 200
    assert wait_until(lambda: "client_disconnected" in server.log_path.read_text(), 5)


def _serve(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mabench", "serve", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.timeout(120)
def test_startup_errors_exit_2(tmp_path: Path) -> None:
    port = str(free_port())
    r = _serve("--port", port, "--model", f"mine={tmp_path / 'missing.gguf'}")
    assert r.returncode == 2 and "no such file" in r.stderr
    not_gguf = tmp_path / "x.gguf"
    not_gguf.write_text("hello")
    r = _serve("--port", port, "--model", f"mine={not_gguf}")
    assert r.returncode == 2 and "not a GGUF file" in r.stderr
    r = _serve("--port", port, "--model", "no-equals-sign")
    assert r.returncode == 2 and "NAME=PATH" in r.stderr
    r = _serve("--port", port, "--models-file", str(tmp_path / "none.yaml"))
    assert r.returncode == 2 and "models file" in r.stderr
    r = _serve("--port", port, "--no-builtin")
    assert r.returncode == 2 and "no models registered" in r.stderr
    r = _serve("--port", port, "--keep-alive", "soon")
    assert r.returncode == 2 and "keep-alive" in r.stderr


@pytest.mark.timeout(120)
def test_port_in_use_exits_2(embedded_server) -> None:
    r = _serve("--port", str(embedded_server.port))
    assert r.returncode == 2 and "cannot listen" in r.stderr


@pytest.mark.timeout(120)
def test_models_file_and_mabench_serve(start_server, tmp_path: Path, model_path: Path) -> None:
    (tmp_path / "models").mkdir()
    link = tmp_path / "models" / "small.gguf"
    link.symlink_to(model_path)
    models_file = tmp_path / "models.yaml"
    models_file.write_text("my-small:q4: models/small.gguf\n")
    server = start_server("--no-builtin", "--models-file", str(models_file), name="modelsfile")
    client = ollama.Client(host=server.url)
    assert [m.model for m in client.list().models] == ["my-small:q4"]
    assert client.generate(model="my-small:q4", prompt="Hi", options=FEW).eval_count > 0
    with pytest.raises(ollama.ResponseError) as err:
        client.generate(model=MODEL, prompt="Hi")
    assert err.value.status_code == 404


def test_models_are_hashed_before_the_server_answers(start_server, server_logs: Path) -> None:
    # Hashing in the background took CPU from whatever a client measured first: the digests
    # are logged before uvicorn accepts connections, and /api/tags has them at once.
    server = start_server("--num-thread", "1", name="hashing")
    with httpx.Client(base_url=server.url, timeout=30) as http:
        digests = [m["digest"] for m in http.get("/api/tags").json()["models"]]
    assert all(len(d) == 64 for d in digests)
    log = (server_logs / "hashing.log").read_text()
    assert log.index("model digests ready") < log.index("Application startup complete")
    assert log.index(f"model {MODEL}: sha256 {digests[0]}") < log.index("model digests ready")
