"""The official ``openai`` Python client works against the embedded server's ``/v1`` unchanged,
and the same model answers the same through both APIs."""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest
from embedded_support import MODEL

from mabench.measure.openai_client import OpenAIClient
from mabench.servers.embedded.launch import ServerProcess

pytestmark = pytest.mark.timeout(180)

MESSAGES = [
    {"role": "system", "content": "You answer briefly."},
    {"role": "user", "content": "What is the capital of France?"},
]


@pytest.fixture
def oai(embedded_server: ServerProcess):
    with openai.OpenAI(base_url=f"{embedded_server.url}/v1", api_key="unused", timeout=120) as c:
        yield c


def test_models(oai: openai.OpenAI) -> None:
    models = {m.id: m for m in oai.models.list()}
    assert MODEL in models
    assert models[MODEL].owned_by == "mabench" and models[MODEL].object == "model"


def test_chat_non_streaming(oai: openai.OpenAI) -> None:
    r = oai.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=8, seed=1)
    assert r.object == "chat.completion" and r.model == MODEL
    (choice,) = r.choices
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert 0 < r.usage.completion_tokens <= 8 and r.usage.prompt_tokens > 10
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_chat_streaming_with_usage(oai: openai.OpenAI) -> None:
    chunks = list(
        oai.chat.completions.create(
            model=MODEL,
            messages=MESSAGES,
            max_tokens=8,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len({c.id for c in chunks}) == 1
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert text and finishes[-1] in ("stop", "length") and not any(finishes[:-1])
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and 0 < usage.completion_tokens <= 8
    assert all(c.usage is None for c in chunks[:-1])


def test_chat_streaming_without_usage_and_async(embedded_server: ServerProcess) -> None:
    async def go() -> list:
        async with openai.AsyncOpenAI(
            base_url=f"{embedded_server.url}/v1", api_key="unused", timeout=120
        ) as c:
            stream = await c.chat.completions.create(
                model=MODEL, messages=MESSAGES, max_tokens=4, stream=True
            )
            return [chunk async for chunk in stream]

    chunks = asyncio.run(go())
    assert all(c.usage is None for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks)


def test_errors_are_openai_errors(oai: openai.OpenAI, http: httpx.Client) -> None:
    with pytest.raises(openai.NotFoundError, match="model 'nope' not found"):
        oai.chat.completions.create(model="nope", messages=MESSAGES, max_tokens=2)
    with pytest.raises(openai.BadRequestError, match="n must be 1"):
        oai.chat.completions.create(model=MODEL, messages=MESSAGES, n=2)
    r = http.post("/v1/chat/completions", json={"model": MODEL, "messages": []})
    assert r.status_code == 400
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert http.post("/api/chat", json=[1]).json() == {
        "error": "request body must be a JSON object"
    }


def test_both_apis_generate_the_same_text_and_counts(
    embedded_server: ServerProcess, http: httpx.Client
) -> None:
    """Greedy decoding: one model through /api/chat and /v1/chat/completions does the same work."""
    native = http.post(
        "/api/chat",
        json={
            "model": MODEL,
            "messages": MESSAGES,
            "stream": False,
            "options": {"temperature": 0, "num_predict": 12, "seed": 3},
        },
    ).json()
    with OpenAIClient(embedded_server.url) as c:
        r = c.call(
            "chat",
            MODEL,
            MESSAGES[1]["content"],
            system=MESSAGES[0]["content"],
            options={"temperature": 0, "num_predict": 12, "seed": 3},
        )
    assert r.text == native["message"]["content"]
    assert r.done_reason == native["done_reason"]
    m = r.metrics
    assert (m.completion_tokens, m.completion_tokens_source) == (native["eval_count"], "usage")
    assert m.prompt_tokens == native["prompt_eval_count"]
    assert m.prompt_ms > 0 and m.predicted_ms > 0  # the embedded server's timings
    assert r.t_sent_ns < r.t_first_token_ns <= r.t_last_token_ns < r.t_done_ns
