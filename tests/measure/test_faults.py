"""Faults of a server mid-answer, on real processes (the simulated server, run as a process of
its own, through both APIs and both clients): a stream that stalls after k tokens and never
closes, a connection reset mid-stream, an answer from another model than the one asked for,
a reported token count that is not what was streamed. Each call fails with a typed error, and
each run with a :class:`RunFailed` naming the server, the phase and the agent; a miscount is
flagged in the record instead."""

from __future__ import annotations

import asyncio
import time

import pytest

from mabench.config import study_from_dict
from mabench.measure.call import CallResult
from mabench.measure.client import AsyncOllamaClient, OllamaClient
from mabench.measure.client_base import Timeouts
from mabench.measure.errors import (
    ModelMismatchError,
    ProtocolError,
    RunFailed,
    ServerTimeoutError,
)
from mabench.measure.openai_client import AsyncOpenAIClient, OpenAIClient
from mabench.measure.protocol import execute_run
from mabench.measure.records import validate_record
from mabench.measure.validity import TOKEN_COUNT_DIFFERS

MODEL = "smollm2:135m"
CLIENTS = [OllamaClient, AsyncOllamaClient, OpenAIClient, AsyncOpenAIClient]


def one_call(client: type, url: str, timeouts: Timeouts | None = None) -> CallResult:
    """One streamed chat call of 8 tokens through ``client`` (sync or async)."""
    kwargs = {"options": {"num_predict": 8}, "phase": "solo"}
    if client in (OllamaClient, OpenAIClient):
        with client(url, timeouts) as c:
            return c.call("chat", MODEL, "hi", **kwargs)

    async def go() -> CallResult:
        async with client(url, timeouts) as c:
            return await c.call("chat", MODEL, "hi", **kwargs)

    return asyncio.run(go())


def study(url: str, api: str = "ollama", **extra: object):
    """Two agents on one external server, two calls of 8 tokens each, solo phase first."""
    calls = [{"prompt": "collector_analyse.md.j2", "num_predict": 8}] * 2
    return study_from_dict(
        {
            "study": "faults",
            "backend": {"kind": "external"},
            "servers": [{"name": "s", "url": url, "api": api}],
            "workloads": {"w": {"calls": calls}},
            "agents": [{"name": a, "workload": "w", "server": "s"} for a in ("collector", "b")],
            "configs": [{"id": "c1", "scenario": "chimera_homo"}],
            "baseline": "solo",
            **extra,
        }
    )


def run_fails(url: str, api: str = "ollama", **extra: object) -> RunFailed:
    """Run 1 (solo phase first) of :func:`study`; the :class:`RunFailed` it must raise."""
    with pytest.raises(RunFailed) as failed:
        execute_run(study(url, api, **extra), "c1", 1, {"s": url})
    return failed.value


def assert_names_server_phase_and_agent(failed: RunFailed, url: str, kind: str) -> None:
    assert failed.info.kind == kind
    assert failed.info.phase == "solo"
    assert failed.agent in ("collector", "b")
    assert failed.info.url.startswith(url)
    message = str(failed)
    assert f"agent {failed.agent!r}" in message and "server 's'" in message, message
    assert url in message and "solo phase" in message, message


# -- a stream that stalls after k tokens and never closes --------------------------------------


@pytest.mark.parametrize("client", CLIENTS, ids=lambda c: c.__name__)
def test_a_stream_stalled_after_k_tokens_fails_at_the_read_timeout(sim_server, client):
    srv = sim_server(fault="stall", fault_after_tokens=3, ttft_ms=5, token_ms=1)
    timeouts = Timeouts(connect_s=2, request_s=30, read_s=0.5)
    t0 = time.monotonic()
    with pytest.raises(ServerTimeoutError, match=r"no answer for 0\.5 s after the stream began"):
        one_call(client, srv.url, timeouts)
    assert time.monotonic() - t0 < 10  # read_s, not request_s (30 s)


@pytest.mark.parametrize("client", CLIENTS[:2], ids=lambda c: c.__name__)
def test_the_wait_for_an_answers_first_chunk_is_request_s_not_read_s(sim_server, client):
    # the server sends its answer's head at once, then nothing: a first token that queues
    # (or a long prefill) is allowed request_s, a stall between chunks read_s
    srv = sim_server(fault="hang", ttft_ms=5, token_ms=1)
    timeouts = Timeouts(connect_s=2, request_s=1.5, read_s=0.2)
    t0 = time.monotonic()
    with pytest.raises(
        ServerTimeoutError, match=r"no answer for 1\.5 s; raise timeouts\.request_s"
    ):
        one_call(client, srv.url, timeouts)
    assert time.monotonic() - t0 >= 1.4


@pytest.mark.parametrize("coordinator", ["asyncio", "threads"])
def test_a_stall_fails_the_run_naming_server_phase_and_agent(sim_server, coordinator):
    # the warm-up (1 generation per agent) is served, the first measured call stalls
    srv = sim_server(fault="stall", fault_after=2, fault_after_tokens=3, ttft_ms=5, token_ms=1)
    timeouts = {"request_s": 30, "read_s": 0.5}
    t0 = time.monotonic()
    failed = run_fails(srv.url, timeouts=timeouts, coordinator=coordinator)
    assert time.monotonic() - t0 < 20
    assert_names_server_phase_and_agent(failed, srv.url, "timeout")
    assert "stalled mid-answer" in str(failed)


def test_read_s_is_a_config_key_outside_the_fingerprint_until_set(sim_server):
    default = study("http://127.0.0.1:1")
    assert "read_s" not in default.timeouts  # the default (60 s) comes from Timeouts
    assert Timeouts(**default.timeouts).read_s == 60.0
    set_ = study("http://127.0.0.1:1", timeouts={"read_s": 5})
    assert Timeouts(**set_.timeouts).read_s == 5.0
    assert default.config_hash("c1") != set_.config_hash("c1")


# -- a connection reset mid-stream ---------------------------------------------------------------


@pytest.mark.parametrize("client", CLIENTS, ids=lambda c: c.__name__)
def test_a_connection_reset_mid_stream_is_a_protocol_error(sim_server, client):
    srv = sim_server(fault="reset", fault_after_tokens=2, ttft_ms=5, token_ms=1)
    with pytest.raises(ProtocolError, match=r"connection broke \(.*reset by peer"):
        one_call(client, srv.url)


@pytest.mark.parametrize("coordinator", ["asyncio", "threads"])
def test_a_reset_fails_the_run_naming_server_phase_and_agent(sim_server, coordinator):
    srv = sim_server(fault="reset", fault_after=2, fault_after_tokens=2, ttft_ms=5, token_ms=1)
    failed = run_fails(srv.url, coordinator=coordinator)
    assert_names_server_phase_and_agent(failed, srv.url, "protocol")
    assert "reset by peer" in str(failed)


# -- an answer from another model than the one asked for -----------------------------------------


@pytest.mark.parametrize("client", CLIENTS, ids=lambda c: c.__name__)
def test_an_answer_from_another_model_fails_the_call(sim_server, client):
    srv = sim_server(answer_model="other:7b", ttft_ms=5, token_ms=1)
    with pytest.raises(
        ModelMismatchError,
        match=r"answered as model 'other:7b', not 'smollm2:135m' as asked: .* serve 'smollm2:135m'",
    ):
        one_call(client, srv.url)


def test_a_model_answered_without_its_default_tag_is_the_same_model(sim_server):
    srv = sim_server(model=["tiny:latest"], answer_model="tiny", ttft_ms=5, token_ms=1)
    with OllamaClient(srv.url) as c:
        assert c.call("chat", "tiny:latest", "hi", options={"num_predict": 3}).metrics.eval_count


@pytest.mark.parametrize("api", ["ollama", "openai"])
def test_another_model_fails_the_run_naming_both_models_server_phase_and_agent(sim_server, api):
    srv = sim_server(answer_model="other:7b", ttft_ms=5, token_ms=1)
    failed = run_fails(srv.url, api)
    # the unmeasured warm-up is the first call to meet it
    assert failed.info.kind == "model" and failed.agent in ("collector", "b")
    assert "'other:7b'" in str(failed) and "'smollm2:135m'" in str(failed)
    assert srv.url in str(failed) and failed.info.phase


# -- a reported token count that is not what was streamed ----------------------------------------


def run_record(url: str, api: str):
    record = execute_run(study(url, api), "c1", 1, {"s": url})
    validate_record(record.to_json())
    return record


@pytest.mark.parametrize("api", ["ollama", "openai"])
def test_a_miscounting_server_flags_the_run_with_each_call_it_miscounted(sim_server, api):
    srv = sim_server(count_offset=3, ttft_ms=5, token_ms=1)
    record = run_record(srv.url, api)
    check = record.validity.token_counts
    assert TOKEN_COUNT_DIFFERS in record.validity.flags
    assert not check.matched and check.compared == len(record.calls) == 8
    assert len(check.differing) == 8
    assert {(c.reported, c.streamed) for c in check.differing} == {(11, 8)}
    assert {c.phase for c in check.differing} == {"solo", "concurrent"}


@pytest.mark.parametrize(("offset", "flagged"), [(1, False), (0, False), (-1, True)])
def test_the_end_token_is_the_only_difference_allowed(sim_server, offset, flagged):
    srv = sim_server(count_offset=offset, ttft_ms=5, token_ms=1)
    record = run_record(srv.url, "ollama")
    assert (TOKEN_COUNT_DIFFERS in record.validity.flags) is flagged
    assert record.validity.token_counts.matched is not flagged


def test_counts_the_client_made_itself_are_not_compared(sim_server):
    # a server that sends no usage: the client counts the deltas, so nothing to compare
    srv = sim_server(count_offset=3, usage="never", ttft_ms=5, token_ms=1)
    record = run_record(srv.url, "openai")
    assert record.validity.token_counts.compared == 0
    assert TOKEN_COUNT_DIFFERS not in record.validity.flags
