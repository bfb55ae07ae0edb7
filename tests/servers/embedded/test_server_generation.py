"""Real metrics, determinism, and Ollama's reload rule on the shared server."""

from __future__ import annotations

import httpx
import ollama
import pytest
from embedded_support import COUNTING, FEW, LONG, MODEL, ndjson

pytestmark = pytest.mark.timeout(180)


def generate(http: httpx.Client, **body) -> dict:
    r = http.post("/api/generate", json={"model": MODEL, "stream": False, **body})
    assert r.status_code == 200, r.text
    return r.json()


def test_metrics_match_the_streamed_tokens(http: httpx.Client) -> None:
    options = {"num_predict": 12, "temperature": 0}  # greedy: the same ASCII text each time
    body = {"model": MODEL, "prompt": "Describe a cat.", "options": options}
    for attempt in range(2):  # the same prompt twice: the KV-cache prefix is not reused
        with http.stream("POST", "/api/generate", json=body) as r:
            chunks = list(ndjson(r))
        final, tokens = chunks[-1], chunks[:-1]
        assert final["done"] and not any(c["done"] for c in tokens)
        # one chunk per generated token (ASCII text, no stop strings); the end-of-generation
        # token is counted by Ollama but carries no text
        expected = len(tokens) + (1 if final["done_reason"] == "stop" else 0)
        assert final["eval_count"] == expected
        if final["done_reason"] == "length":
            assert final["eval_count"] == 12
        assert final["prompt_eval_count"] > 10, attempt
        for key in ("total_duration", "prompt_eval_duration", "eval_duration"):
            assert final[key] > 0, key
        parts = final["prompt_eval_duration"] + final["eval_duration"] + final["load_duration"]
        assert final["total_duration"] >= parts


def test_same_seed_same_text(client: ollama.Client) -> None:
    options = {"seed": 1234, "temperature": 0.9, "num_predict": 16}
    first = client.generate(model=MODEL, prompt="Write a poem about rain.", options=options)
    second = client.generate(model=MODEL, prompt="Write a poem about rain.", options=options)
    assert first.response == second.response and first.response
    chat = [{"role": "user", "content": "Name a fruit."}]
    a = client.chat(model=MODEL, messages=chat, options=options).message.content
    b = client.chat(model=MODEL, messages=chat, options=options).message.content
    assert a == b


def test_reload_exactly_when_a_runner_option_changes(http: httpx.Client) -> None:
    def load_ns(options: dict) -> int:
        return generate(http, prompt="Hi", options={**FEW, **options})["load_duration"]

    load_ns({})  # whatever is loaded now: start from the defaults
    assert load_ns({}) == 0
    # sampling options never reload
    for sampling in (
        {"temperature": 0.1},
        {"top_k": 5, "top_p": 0.5},
        {"seed": 7},
        {"repeat_penalty": 1.3, "stop": ["\n\n"]},
        {"num_predict": 3},
    ):
        assert load_ns(sampling) == 0, sampling
    # the server's defaults spelled out are the same runner: no reload
    assert load_ns({"num_ctx": 4096, "num_batch": 512, "num_thread": 1}) == 0
    # every runner option change reloads, once
    for runner in (
        {"num_ctx": 2048},
        {"num_batch": 256},
        {"num_thread": 2},
        {"num_gpu": 0},
        {"use_mmap": False},
        {"main_gpu": 1},
    ):
        assert load_ns(runner) > 0, runner
        assert load_ns(runner) == 0, runner
        assert load_ns({**runner, "temperature": 0.2}) == 0, runner
    assert load_ns({}) > 0  # back to the defaults


def test_context_length_follows_num_ctx(client: ollama.Client) -> None:
    client.generate(model=MODEL, prompt="Hi", options={**FEW, "num_ctx": 1024})
    assert {m.model: m.context_length for m in client.ps().models}[MODEL] == 1024
    # clamped to the model's training context (8192)
    client.generate(model=MODEL, prompt="Hi", options={**FEW, "num_ctx": 100_000})
    assert {m.model: m.context_length for m in client.ps().models}[MODEL] == 8192
    client.generate(model=MODEL, prompt="", options={})  # back to the default


def test_stop_string_and_greedy(http: httpx.Client) -> None:
    body = {
        "prompt": COUNTING,
        "raw": True,
        "options": {"temperature": 0, "stop": [" 14"], "num_predict": 30},
    }
    final = generate(http, **body)
    assert final["done_reason"] == "stop"
    assert final["response"].startswith(" 11, 12, 13,")
    assert "14" not in final["response"]
    assert final["response"] == generate(http, **body)["response"]


def test_num_predict_limits_and_zero_is_prefill_only(http: httpx.Client) -> None:
    final = generate(http, prompt=COUNTING, raw=True, options={"num_predict": 5, "temperature": 0})
    assert final["done_reason"] == "length" and final["eval_count"] == 5
    final = generate(http, prompt="Hello there", options={"num_predict": 0})
    assert final["done_reason"] == "length" and final["response"] == ""
    assert final["eval_count"] == 0 and final["prompt_eval_count"] > 0
    assert final["prompt_eval_duration"] > 0


def test_generate_system_and_raw(http: httpx.Client) -> None:
    templated = generate(http, prompt="Hi", options={"num_predict": 1})
    with_system = generate(http, prompt="Hi", system="Be terse.", options={"num_predict": 1})
    raw = generate(http, prompt="Hi", raw=True, options={"num_predict": 1})
    # the template wraps the prompt in ChatML; raw mode sends the prompt alone
    assert raw["prompt_eval_count"] < templated["prompt_eval_count"]
    assert with_system["prompt_eval_count"] != templated["prompt_eval_count"]


def test_ps_answers_during_a_generation(http: httpx.Client, embedded_server) -> None:
    body = {"model": MODEL, "prompt": COUNTING, "raw": True, "options": {**LONG, "num_predict": 60}}
    with http.stream("POST", "/api/generate", json=body) as r:
        lines = r.iter_lines()
        first = next(lines)
        assert '"done":false' in first
        with httpx.Client(base_url=embedded_server.url, timeout=5) as other:
            ps = other.get("/api/ps")  # answered while the generation runs
            assert ps.status_code == 200 and MODEL in ps.text
        list(lines)


def test_unload_frees_memory(client: ollama.Client, embedded_server) -> None:
    import psutil

    proc = psutil.Process(embedded_server.pid)
    client.generate(model=MODEL, prompt="Hi", options=FEW)
    loaded = proc.memory_info().rss
    client.generate(model=MODEL, prompt="", keep_alive=0)
    unloaded = proc.memory_info().rss
    assert unloaded < loaded - (50 << 20), (loaded >> 20, unloaded >> 20)
