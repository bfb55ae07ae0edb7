"""The client against real (simulated) servers: timestamps, and a typed error for every failure."""

from __future__ import annotations

import asyncio
import time

import pytest

from mabench.measure import arrivals
from mabench.measure.client import AsyncOllamaClient, OllamaClient, _StreamParser
from mabench.measure.client_base import Timeouts
from mabench.measure.errors import (
    ProtocolError,
    ServerConnectError,
    ServerHTTPError,
    ServerStreamError,
    ServerTimeoutError,
)
from mabench.measure.openai_client import AsyncOpenAIClient, OpenAIClient
from mabench.servers.net import free_port

MODEL = "smollm2:135m"


def test_sync_and_async_clients_measure_the_same_call(sim_server):
    srv = sim_server(ttft_ms=80, token_ms=10)
    with OllamaClient(srv.url) as c:
        assert c.version() == "sim-parallel"
        assert [m["name"] for m in c.tags()] == [MODEL]
        assert c.load(MODEL).done_reason == "load"
        sync = c.call("chat", MODEL, "hello there", options={"num_predict": 5})

    async def go():
        async with AsyncOllamaClient(srv.url) as c:
            return await c.call("generate", MODEL, "hello there", options={"num_predict": 5})

    res = asyncio.run(go())
    for r in (sync, res):
        assert r.text == "tok0 tok1 tok2 tok3 tok4 "
        assert r.metrics.eval_count == 5
        assert r.done_reason == "length"
        ttft_ms = (r.t_first_token_ns - r.t_sent_ns) / 1e6
        # the server's 80 ms are a floor no clock error can go under; above it, a loaded 2-core
        # machine has delayed the first token by 150+ ms (seen 232 and 251 ms beside a study),
        # so the ceiling only catches a stalled call (the first token's timing is pinned more
        # tightly, against an ideal server, by benchmarks/ttft_accuracy.py)
        assert 75 <= ttft_ms < 1000
        assert r.t_sent_ns < r.t_first_token_ns <= r.t_last_token_ns <= r.t_done_ns
        # 4 more tokens, 10 ms apart
        assert 35 <= (r.t_last_token_ns - r.t_first_token_ns) / 1e6 < 150


def test_every_text_chunk_arrival_is_kept_and_encoded(sim_server):
    # the simulated server streams one token per chunk, token_ms apart after the first
    srv = sim_server(ttft_ms=20, token_ms=15)
    with OllamaClient(srv.url) as c:
        r = c.call("generate", MODEL, "hi", options={"num_predict": 6})
    assert len(r.arrivals_ns) == 6 == r.metrics.eval_count
    assert (r.arrivals_ns[0], r.arrivals_ns[-1]) == (r.t_first_token_ns, r.t_last_token_ns)
    assert list(r.arrivals_ns) == sorted(r.arrivals_ns)
    gaps = arrivals.encode(r.arrivals_ns, r.t_sent_ns)
    # the first entry is the TTFT, the running sum gives back each offset to the microsecond
    assert gaps[0] == round((r.t_first_token_ns - r.t_sent_ns) / 1000)
    assert sum(gaps) == round((r.t_last_token_ns - r.t_sent_ns) / 1000)
    assert min(gaps) >= 0


def test_arrivals_encode_without_drift():
    sent = 1_000_000_000
    times = [sent + 1_234_567, sent + 1_240_001, sent + 1_240_499, sent + 9_000_000]
    gaps = arrivals.encode(times, sent)
    assert gaps == [1235, 5, 0, 7760]  # offsets 1235, 1240, 1240, 9000 us
    assert arrivals.encode([], sent) == []


@pytest.mark.parametrize(
    ("sync_client", "async_client"),
    [(OllamaClient, AsyncOllamaClient), (OpenAIClient, AsyncOpenAIClient)],
    ids=["ollama", "openai"],
)
def test_a_call_counts_the_connections_it_opened(sim_server, sync_client, async_client):
    # The first call opens the client's connection; the next reuses it; a call after the
    # server closed the idle connection (its keep-alive is 0.3 s) opens a new one.
    srv = sim_server(ttft_ms=5, token_ms=1, keep_alive_s=0.3)
    opts = {"num_predict": 2}

    def sync_calls() -> list[int]:
        with sync_client(srv.url) as c:
            first, again = (c.call("chat", MODEL, "hi", options=opts) for _ in range(2))
            time.sleep(1.0)
            late = c.call("chat", MODEL, "hi", options=opts)
            return [first.reconnects, again.reconnects, late.reconnects]

    async def async_calls() -> list[int]:
        async with async_client(srv.url) as c:
            first = await c.call("chat", MODEL, "hi", options=opts)
            again = await c.call("chat", MODEL, "hi", options=opts)
            await asyncio.sleep(1.0)
            late = await c.call("chat", MODEL, "hi", options=opts)
            return [first.reconnects, again.reconnects, late.reconnects]

    assert sync_calls() == [1, 0, 1]
    assert asyncio.run(async_calls()) == [1, 0, 1]


def test_unload_and_ps(sim_server):
    srv = sim_server()
    with OllamaClient(srv.url) as c:
        c.load(MODEL)
        assert [m["name"] for m in c.ps()] == [MODEL]
        assert c.unload(MODEL).done_reason == "unload"
        assert c.ps() == []


@pytest.mark.parametrize(
    ("fault", "error", "text"),
    [
        ("http500", ServerHTTPError, "simulated internal error"),
        ("invalid_json", ProtocolError, "invalid JSON"),
        ("truncate", ProtocolError, "without a final chunk"),
        ("no_metrics", ProtocolError, "without metrics"),
        ("midstream_error", ServerStreamError, "simulated failure during generation"),
    ],
)
def test_malformed_answers_are_typed_errors(sim_server, fault, error, text):
    srv = sim_server(fault=fault, ttft_ms=5, token_ms=1)
    with OllamaClient(srv.url) as c, pytest.raises(error, match=text) as info:
        c.call("chat", MODEL, "hi", options={"num_predict": 4}, phase="concurrent")
    assert info.value.url.startswith(srv.url)
    assert info.value.phase == "concurrent"
    assert info.value.info().kind == error.kind


@pytest.mark.parametrize(
    ("line", "text"),
    [
        (b'{"response": "\xff", "done": false}', "invalid JSON in stream chunk 1"),
        (b'{"response": "a"} {"response": "b"}', "invalid JSON in stream chunk 1"),
        (b'["response"]', "not an object"),
        (b'{"response": 7, "done": false}', "not a string"),
    ],
)
def test_a_chunk_that_is_no_utf8_json_object_is_a_protocol_error(line, text):
    parser = _StreamParser("generate", "http://server/api/generate", "solo")
    with pytest.raises(ProtocolError, match=text):
        parser.line(line)
    parser = _StreamParser("generate", "http://server/api/generate", "solo")
    parser.line(b'  {"response": "\xc3\xa9", "done": false}  ')  # padded, UTF-8: fine
    assert parser.parts == ["\u00e9"]


def test_unknown_model_is_http_404(sim_server):
    srv = sim_server()
    with OllamaClient(srv.url) as c, pytest.raises(ServerHTTPError) as info:
        c.call("chat", "nope:1b", "hi")
    assert info.value.status == 404
    assert info.value.message == "model 'nope:1b' not found"


@pytest.mark.parametrize("fault", ["hang", "stall"])
def test_a_silent_server_times_out(sim_server, fault):
    srv = sim_server(fault=fault, ttft_ms=5, token_ms=1)
    timeouts = Timeouts(connect_s=2, request_s=0.5, load_s=2)
    with (
        OllamaClient(srv.url, timeouts) as c,
        pytest.raises(ServerTimeoutError, match=r"no answer for 0\.5 s"),
    ):
        c.call("chat", MODEL, "hi", options={"num_predict": 8})

    async def go():
        async with AsyncOllamaClient(srv.url, timeouts) as ac:
            await ac.call("chat", MODEL, "hi", options={"num_predict": 8})

    with pytest.raises(ServerTimeoutError):
        asyncio.run(go())


def test_nothing_listening_is_a_connect_error():
    url = f"http://127.0.0.1:{free_port()}"
    with (
        OllamaClient(url, Timeouts(connect_s=1)) as c,
        pytest.raises(ServerConnectError, match="is the server running"),
    ):
        c.version()


def test_a_crashing_server_breaks_the_stream(sim_server):
    srv = sim_server(fault="die", ttft_ms=5, token_ms=1)
    with OllamaClient(srv.url) as c, pytest.raises((ProtocolError, ServerConnectError)):
        c.call("chat", MODEL, "hi", options={"num_predict": 8})
