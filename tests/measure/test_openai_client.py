"""The OpenAI client against real (simulated) servers: timestamps, counts and where they came
from, and a typed error for every failure."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mabench.api.ollama import OptionsError
from mabench.measure.call import CompletionMetrics
from mabench.measure.client_base import Timeouts
from mabench.measure.errors import (
    ProtocolError,
    ServerHTTPError,
    ServerStreamError,
    ServerTimeoutError,
)
from mabench.measure.openai_client import AsyncOpenAIClient, OpenAIClient

MODEL = "smollm2:135m"


def test_sync_and_async_clients_measure_the_same_call(sim_server):
    # the sim server sends the role-only chunk at once: TTFT must wait for the first content
    srv = sim_server(ttft_ms=80, token_ms=10)
    with OpenAIClient(srv.url) as c:
        assert c.models() == [MODEL]
        loaded = c.load(MODEL, {"temperature": 0.5})
        assert (loaded.done_reason, loaded.load_duration_ns) == ("length", None)
        assert loaded.wall_ns > 0
        sync = c.call("chat", MODEL, "hello there", options={"num_predict": 5})

    async def go():
        async with AsyncOpenAIClient(srv.url) as c:
            return await c.call("chat", MODEL, "hello there", options={"num_predict": 5})

    for r in (sync, asyncio.run(go())):
        assert r.text == "tok0 tok1 tok2 tok3 tok4 "
        assert r.done_reason == "length"
        assert r.metrics == CompletionMetrics(
            completion_tokens=5,
            completion_tokens_source="usage",
            prompt_tokens=2,
            prompt_tokens_source="usage",
            prompt_ms=None,
            predicted_ms=None,
        )
        assert r.chunks == 8  # role, 5 tokens, finish, usage
        # every content delta's arrival, as the NDJSON parser keeps them (TokenArrivals)
        assert len(r.arrivals_ns) == 5 and r.arrivals_ns[0] == r.t_first_token_ns
        assert list(r.arrivals_ns) == sorted(r.arrivals_ns)
        ttft_ms = (r.t_first_token_ns - r.t_sent_ns) / 1e6
        assert 75 <= ttft_ms < 200
        assert r.t_sent_ns < r.t_first_token_ns <= r.t_last_token_ns <= r.t_done_ns
        assert 35 <= (r.t_last_token_ns - r.t_first_token_ns) / 1e6 < 150


def test_without_usage_the_client_counts_the_streamed_deltas(sim_server):
    srv = sim_server(usage="never")
    with OpenAIClient(srv.url) as c:
        r = c.call("chat", MODEL, "a b c", options={"num_predict": 7})
    assert r.metrics.completion_tokens == 7
    assert r.metrics.completion_tokens_source == "stream"
    assert r.metrics.prompt_tokens is None and r.metrics.prompt_tokens_source is None


def test_llama_cpp_timings_give_the_server_split(sim_server):
    srv = sim_server(ttft_ms=50, token_ms=10, usage="never", timings=True)
    with OpenAIClient(srv.url) as c:
        r = c.call("chat", MODEL, "a b c", options={"num_predict": 4})
    m = r.metrics
    assert (m.completion_tokens, m.completion_tokens_source) == (4, "timings")
    assert (m.prompt_tokens, m.prompt_tokens_source) == (3, "timings")
    assert (m.prompt_ms, m.predicted_ms) == (40.0, 40.0)


@pytest.mark.parametrize(
    ("fault", "error", "text"),
    [
        ("http500", ServerHTTPError, "simulated internal error"),
        ("invalid_json", ProtocolError, "invalid JSON in stream event"),
        ("truncate", ProtocolError, "without a finish_reason"),
        ("midstream_error", ServerStreamError, "simulated failure during generation"),
        ("die", ProtocolError, "connection broke"),
    ],
)
def test_malformed_answers_are_typed_errors(sim_server, fault, error, text):
    srv = sim_server(fault=fault)
    with OpenAIClient(srv.url) as c, pytest.raises(error, match=text) as info:
        c.call("chat", MODEL, "hi", options={"num_predict": 4}, phase="solo")
    assert info.value.url == srv.url + "/v1/chat/completions"
    assert info.value.phase == "solo"


def test_a_silent_server_times_out(sim_server):
    srv = sim_server(fault="hang")
    with (
        OpenAIClient(srv.url, Timeouts(connect_s=2, request_s=0.5)) as c,
        pytest.raises(ServerTimeoutError, match=r"no answer for 0\.5 s"),
    ):
        c.call("chat", MODEL, "hi")


def test_unknown_model_is_http_404_with_the_servers_message(sim_server):
    srv = sim_server()
    with OpenAIClient(srv.url) as c, pytest.raises(ServerHTTPError) as info:
        c.call("chat", "nope", "hi")
    assert info.value.status == 404 and "`nope` does not exist" in info.value.message


def test_the_api_key_is_sent_and_required(sim_server, monkeypatch):
    monkeypatch.setenv("SIM_KEY", "k-123")
    srv = sim_server(api_key_env="SIM_KEY")
    with OpenAIClient(srv.url, api_key="k-123") as c:
        assert c.models() == [MODEL]
        assert c.call("chat", MODEL, "hi", options={"num_predict": 2}).text == "tok0 tok1 "
    for key in (None, "wrong"):
        with OpenAIClient(srv.url, api_key=key) as c, pytest.raises(ServerHTTPError) as info:
            c.models()
        assert info.value.status == 401


class _EchoingKey(BaseHTTPRequestHandler):
    """A careless server: its 401 quotes the key it was sent."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        body = json.dumps({"error": {"message": f"bad key: {self.headers['authorization']}"}})
        self.send_response(401)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    do_GET = do_POST

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def echoing_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EchoingKey)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_a_key_the_server_quotes_back_is_cut_out_of_the_error(echoing_server):
    with OpenAIClient(echoing_server, api_key="sk-secret-9") as c:
        for attempt in (c.models, lambda: c.call("chat", MODEL, "hi")):
            with pytest.raises(ServerHTTPError) as info:
                attempt()
            assert "sk-secret-9" not in str(info.value)
            assert info.value.message == "bad key: Bearer [API key]"


def test_only_chat_and_openai_options_are_sent(sim_server):
    srv = sim_server()
    with OpenAIClient(srv.url) as c:
        with pytest.raises(ValueError, match="endpoint must be chat, not 'generate'"):
            c.call("generate", MODEL, "hi")
        with pytest.raises(OptionsError, match="'num_ctx' has no OpenAI API equivalent"):
            c.call("chat", MODEL, "hi", options={"num_ctx": 2048})
