"""The OpenAI API contract: requests both ways, option mapping, the objects servers send."""

from __future__ import annotations

import json

import pytest

from mabench.api.ollama import Message, Metrics, Options, OptionsError, RequestError
from mabench.api.openai import (
    ChatCompletionRequest,
    CompletionShape,
    StreamChunk,
    Timings,
    Usage,
    error_body,
    model_ids,
    model_list,
    parse_completion,
    request_fields,
    sse_event,
    unsupported_options,
)


def test_sampling_options_map_to_their_openai_fields():
    opts = Options(temperature=0.7, top_p=0.9, seed=3, num_predict=40, stop=["\n"])
    assert request_fields(opts) == {
        "temperature": 0.7,
        "top_p": 0.9,
        "seed": 3,
        "max_tokens": 40,
        "stop": ["\n"],
    }


@pytest.mark.parametrize("key", ["num_ctx", "num_gpu", "num_thread", "top_k", "repeat_penalty"])
def test_options_without_an_openai_field_are_refused_by_name(key):
    opts = Options.from_mapping({key: 1, "temperature": 0.5})
    assert unsupported_options(opts) == [key]
    with pytest.raises(OptionsError, match=f"option '{key}' has no OpenAI API equivalent"):
        request_fields(opts)


def test_a_streamed_prompt_asks_for_usage_and_round_trips():
    req = ChatCompletionRequest.for_prompt("m", "hello", "be brief", Options(num_predict=5, seed=1))
    body = req.to_json()
    assert body == {
        "model": "m",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hello"},
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
        "seed": 1,
        "max_tokens": 5,
    }
    assert ChatCompletionRequest.from_json(json.loads(json.dumps(body))) == req


def test_request_parsing_accepts_what_clients_send():
    req = ChatCompletionRequest.from_json(
        {
            "model": "m",
            "messages": [
                {"role": "developer", "content": "sys"},
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
                },
            ],
            "max_tokens": 3,
            "max_completion_tokens": 4,
            "temperature": 0,
            "stop": "x",
            "n": 1,
            "user": "ignored",
        }
    )
    assert req.messages == (Message("system", "sys"), Message("user", "ab"))
    assert not req.stream and not req.include_usage
    assert req.options == Options(num_predict=4, temperature=0.0, stop=["x"])


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "must be a JSON object"),
        ({"messages": [{"role": "user", "content": "x"}]}, "model is required"),
        ({"model": "m", "messages": []}, "messages must be a non-empty array"),
        ({"model": "m", "messages": [{"role": "robot", "content": "x"}]}, r"messages\[0\].role"),
        ({"model": "m", "messages": [{"role": "user", "content": 3}]}, r"messages\[0\].content"),
        (
            {"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
            "only text parts",
        ),
        ({"model": "m", "messages": [{"role": "user"}], "n": 2}, "n must be 1"),
        ({"model": "m", "messages": [{"role": "user"}], "stream": "yes"}, "stream must be"),
        (
            {"model": "m", "messages": [{"role": "user"}], "stream_options": {}},
            "only allowed when stream is true",
        ),
        ({"model": "m", "messages": [{"role": "user"}], "temperature": "hot"}, "temperature"),
        ({"model": "m", "messages": [{"role": "user"}], "max_tokens": -1}, "max_tokens must be"),
    ],
)
def test_bad_requests_are_400_with_the_field_named(body, message):
    with pytest.raises(RequestError, match=message) as info:
        ChatCompletionRequest.from_json(body)
    assert info.value.status == 400


def test_chunks_read_text_finish_usage_and_timings():
    shape = CompletionShape("m")
    assert StreamChunk.from_json(shape.first()) == StreamChunk("", None, None, None)
    assert StreamChunk.from_json(shape.text("hi")).content == "hi"
    timings = Timings(prompt_n=7, prompt_ms=12.5, predicted_n=3, predicted_ms=30.0)
    end = StreamChunk.from_json(shape.finish("length", timings))
    assert (end.finish_reason, end.timings) == ("length", timings)
    usage = StreamChunk.from_json(shape.usage(Usage(7, 3)))
    assert usage == StreamChunk("", None, Usage(7, 3), None)
    assert shape.usage(Usage(7, 3))["usage"]["total_tokens"] == 10
    ids = {shape.first()["id"], shape.text("x")["id"], shape.usage(Usage(1, 1))["id"]}
    assert len(ids) == 1 and ids.pop().startswith("chatcmpl-")


@pytest.mark.parametrize(
    ("chunk", "message"),
    [
        ("text", "not an object"),
        ({"choices": {}}, "not an array"),
        ({"choices": [{"delta": {"content": 5}}]}, "content is not a string"),
        ({"choices": [{"delta": {}, "finish_reason": 1}]}, "finish_reason"),
        ({"choices": [], "usage": {"prompt_tokens": 1}}, "completion_tokens"),
        ({"choices": [], "timings": {"prompt_n": 1, "prompt_ms": -1}}, "negative"),
    ],
)
def test_malformed_chunks_name_the_field(chunk, message):
    with pytest.raises(ValueError, match=message):
        StreamChunk.from_json(chunk)


def test_completion_models_errors_and_events():
    shape = CompletionShape("m")
    body = shape.completion("answer", "stop", Usage(4, 2))
    assert parse_completion(body) == ("answer", "stop", Usage(4, 2))
    assert body["object"] == "chat.completion"
    with pytest.raises(ValueError, match="no 'choices'"):
        parse_completion({"choices": []})
    listing = model_list(["a", "b:1"], owned_by="me")
    assert model_ids(listing) == ["a", "b:1"]
    with pytest.raises(ValueError, match="'data' list"):
        model_ids({"models": []})
    assert error_body("nope", 404)["error"] == {
        "message": "nope",
        "type": "not_found_error",
        "param": None,
        "code": None,
    }
    assert error_body("x", 500)["error"]["type"] == "server_error"
    assert sse_event({"a": 1}) == b'data: {"a":1}\n\n'
    assert sse_event("[DONE]") == b"data: [DONE]\n\n"


def test_usage_and_timings_of_ollamas_final_metrics():
    metrics = Metrics(
        total_duration=9_000_000,
        load_duration=0,
        prompt_eval_count=12,
        prompt_eval_duration=2_500_000,
        eval_count=7,
        eval_duration=3_000_000,
    )
    assert Usage.of(metrics).to_json() == {
        "prompt_tokens": 12,
        "completion_tokens": 7,
        "total_tokens": 19,
    }
    assert Timings.of(metrics) == Timings(
        prompt_n=12, prompt_ms=2.5, predicted_n=7, predicted_ms=3.0
    )
    assert CompletionShape("m").finish("length", Timings.of(metrics))["timings"]["prompt_ms"] == 2.5
