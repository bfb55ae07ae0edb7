"""The cached prompt tokens a server reports, as the clients read them and the record keeps
them: OpenAI's ``usage.prompt_tokens_details.cached_tokens``, llama.cpp's ``timings.cache_n``,
nothing invented where a server says neither; and the cache resets a client can call."""

from __future__ import annotations

import pytest

from mabench.measure.agents import server_metrics
from mabench.measure.client import OllamaClient
from mabench.measure.openai_client import OpenAIClient, cached_prompt_tokens

MODEL = "smollm2:135m"
PROMPT = "one two three four five six seven eight"


@pytest.mark.parametrize(
    ("chunk", "cached"),
    [
        ({"usage": {"prompt_tokens": 9, "prompt_tokens_details": {"cached_tokens": 7}}}, 7),
        ({"timings": {"prompt_n": 2, "cache_n": 7}}, 7),
        # both: usage wins (it is the API's own field)
        ({"usage": {"prompt_tokens_details": {"cached_tokens": 3}}, "timings": {"cache_n": 7}}, 3),
        ({"usage": {"prompt_tokens_details": {"cached_tokens": 0}}}, 0),
        ({"usage": {"prompt_tokens": 9}}, None),
        ({"usage": {"prompt_tokens_details": None}}, None),
        ({"timings": {"prompt_n": 9}}, None),
        ({"choices": []}, None),
        ({"usage": {"prompt_tokens_details": {"cached_tokens": -1}}}, None),
        ({"usage": {"prompt_tokens_details": {"cached_tokens": True}}}, None),
        ({"timings": {"cache_n": "7"}}, None),
        ([], None),
    ],
)
def test_cached_prompt_tokens_are_read_where_the_server_puts_them_and_never_guessed(chunk, cached):
    assert cached_prompt_tokens(chunk) == cached


@pytest.mark.parametrize(
    "settings", [{}, {"timings": True, "shape": "openai-usage-in-finish"}], ids=["usage", "timings"]
)
def test_a_repeated_prompt_is_recorded_as_cached_and_a_reset_empties_the_cache(
    sim_server, settings
):
    srv = sim_server(prefix_cache=True, ttft_ms=60, token_ms=5, **settings)
    with OpenAIClient(srv.url) as c:
        first = c.call("chat", MODEL, PROMPT, options={"num_predict": 2})
        again = c.call("chat", MODEL, PROMPT, options={"num_predict": 2})
        assert c.reset_cache("/reset_prefix_cache") is True
        after_reset = c.call("chat", MODEL, PROMPT, options={"num_predict": 2})
    # the simulation's tokens are words; a fully repeated prompt still evaluates its last one
    assert [r.metrics.cached_prompt_tokens for r in (first, again, after_reset)] == [0, 7, 0]
    assert server_metrics(again.metrics).cached_prompt_tokens == 7


def test_a_server_that_says_nothing_of_its_cache_leaves_the_count_null(sim_server):
    srv = sim_server(shape="openai-no-usage")
    with OpenAIClient(srv.url) as c:
        r = c.call("chat", MODEL, PROMPT, options={"num_predict": 2})
    assert r.metrics.cached_prompt_tokens is None
    assert server_metrics(r.metrics).cached_prompt_tokens is None


def test_ollamas_api_reports_fewer_evaluated_tokens_and_no_cached_count(sim_server):
    srv = sim_server(prefix_cache=True)
    with OllamaClient(srv.url) as c:
        counts = [
            server_metrics(c.call("chat", MODEL, PROMPT, options={"num_predict": 2}).metrics)
            for _ in range(2)
        ]
    assert [m.prompt_eval_count for m in counts] == [8, 1]
    assert [m.cached_prompt_tokens for m in counts] == [None, None]


def test_a_reset_route_the_server_lacks_is_reported_as_not_offered(sim_server):
    srv = sim_server()  # no prefix cache: no /reset_prefix_cache, no /slots
    with OpenAIClient(srv.url) as c:
        assert c.reset_cache("/reset_prefix_cache") is False
        assert c.reset_cache("/flush_cache") is False
        assert c.slot_ids() is None
