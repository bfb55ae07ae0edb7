"""Ollama's response objects, as our servers send them: read back by the official ``ollama``
client's own types and by our client's parser, in Ollama's key order."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import ollama
import pytest

from mabench.api.ollama import (
    GenerationShape,
    Metrics,
    ModelDetails,
    ModelSummary,
    error_body,
    models_body,
    rfc3339,
    show_body,
    version_body,
)

METRICS = Metrics(
    total_duration=900,
    load_duration=100,
    prompt_eval_count=5,
    prompt_eval_duration=200,
    eval_count=3,
    eval_duration=300,
)
DETAILS = ModelDetails(
    format="gguf", family="llama", parameter_size="135M", quantization_level="Q4_1"
)
SUMMARY = ModelSummary(
    "smollm2:135m", size=1000, digest="ab" * 32, details=DETAILS, modified_at=rfc3339(0)
)


def test_times_are_rfc3339_in_utc_to_the_microsecond():
    assert rfc3339(0) == "1970-01-01T00:00:00.000000Z"
    moment = datetime(2026, 1, 2, 3, 4, 5, 60, tzinfo=UTC)
    assert rfc3339(moment) == "2026-01-02T03:04:05.000060Z"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", rfc3339())


@pytest.mark.parametrize(
    ("endpoint", "response_type"),
    [("chat", ollama.ChatResponse), ("generate", ollama.GenerateResponse)],
)
def test_a_generations_chunks_read_back_as_ollamas(endpoint, response_type):
    shape = GenerationShape(endpoint, "SmolLM2:135m")
    chunk = response_type.model_validate(shape.chunk("tok "))
    assert (chunk.model, chunk.done) == ("SmolLM2:135m", False)
    text = chunk.message.content if endpoint == "chat" else chunk.response
    assert text == "tok "
    final = shape.final("", "length", METRICS)
    read = response_type.model_validate(final)
    assert (read.done, read.done_reason, read.eval_count, read.total_duration) == (
        True,
        "length",
        3,
        900,
    )
    assert Metrics.from_json(final) == METRICS
    content = "message" if endpoint == "chat" else "response"
    assert list(final)[:6] == [
        "model",
        "created_at",
        content,
        "done",
        "done_reason",
        "total_duration",
    ]


def test_a_final_chunk_without_metrics_is_what_a_broken_server_sends():
    final = GenerationShape("generate", "m").final("", "stop", None)
    assert "eval_count" not in final
    with pytest.raises(ValueError, match="no valid 'total_duration'"):
        Metrics.from_json(final)


def test_load_and_unload_answers_carry_their_durations():
    body = GenerationShape("generate", "m").lifecycle("unload", total_ns=40, load_ns=0)
    read = ollama.GenerateResponse.model_validate(body)
    assert (read.done_reason, read.response, read.total_duration, read.load_duration) == (
        "unload",
        "",
        40,
        0,
    )


def test_listed_and_loaded_models_read_back_as_ollamas():
    tags = ollama.ListResponse.model_validate(models_body([SUMMARY.tags_entry()]))
    (model,) = tags.models
    assert (model.model, model.size, model.digest) == ("smollm2:135m", 1000, "ab" * 32)
    assert model.details.families == ["llama"] and model.details.quantization_level == "Q4_1"
    assert model.modified_at == datetime(1970, 1, 1, tzinfo=UTC)
    entry = SUMMARY.ps_entry("2030-01-01T00:00:00.000000Z", context_length=2048)
    (loaded,) = ollama.ProcessResponse.model_validate(models_body([entry])).models
    assert (loaded.context_length, loaded.size_vram) == (2048, 0)
    assert loaded.expires_at == datetime(2030, 1, 1, tzinfo=UTC)
    assert "modified_at" not in entry  # as Ollama's /api/ps


def test_show_reads_back_as_ollamas():
    body = show_body(
        DETAILS, {"general.architecture": "llama"}, rfc3339(0), template="{{ .Prompt }}"
    )
    show = ollama.ShowResponse.model_validate(body)
    assert show.details.family == "llama" and show.capabilities == ["completion"]
    assert show.modelinfo == {"general.architecture": "llama"}
    assert (show.template, show.license, show.parameters) == ("{{ .Prompt }}", "", "")


def test_errors_and_the_version():
    assert error_body("model 'x' not found") == {"error": "model 'x' not found"}
    assert version_body("1.2.3") == {"version": "1.2.3"}
