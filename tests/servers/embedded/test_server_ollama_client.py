"""The official ``ollama`` Python client works against the embedded server unchanged."""

from __future__ import annotations

import time

import httpx
import ollama
import pytest
from embedded_support import FEW, MODEL

from mabench.api.ollama import Metrics
from mabench.measure.client import OllamaClient
from mabench.servers.net import wait_until

pytestmark = pytest.mark.timeout(180)


def test_root_and_version(http: httpx.Client) -> None:
    r = http.get("/")
    assert r.status_code == 200 and r.text == "Ollama is running"
    version = http.get("/api/version").json()["version"]
    assert isinstance(version, str) and version


def test_list(client: ollama.Client, model_path) -> None:
    models = {m.model: m for m in client.list().models}
    assert {MODEL, "tiny:latest"} <= set(models)
    m = models[MODEL]
    assert m.size == model_path.stat().st_size
    assert len(m.digest) == 64
    assert m.details.format == "gguf"
    assert m.details.family == "llama"
    assert m.details.parameter_size == "135M"
    assert m.details.quantization_level == "Q4_1"
    assert m.modified_at is not None


def test_show(client: ollama.Client) -> None:
    info = client.show(MODEL)
    assert info.details.quantization_level == "Q4_1"
    assert info.modelinfo["general.architecture"] == "llama"
    assert info.modelinfo["llama.context_length"] == 8192
    assert info.modelinfo["general.parameter_count"] > 100_000_000
    assert info.capabilities == ["completion"]
    assert "<|im_start|>" in info.template
    assert info.modelfile.startswith("# Modelfile")


def test_generate_non_streaming(client: ollama.Client) -> None:
    r = client.generate(model=MODEL, prompt="Why is the sky blue?", options=FEW)
    assert r.done and r.done_reason in ("stop", "length")
    assert r.response
    assert r.model == MODEL
    assert 0 < r.eval_count <= 8
    assert r.prompt_eval_count > 0 and r.prompt_eval_duration > 0 and r.eval_duration > 0
    assert r.total_duration >= r.prompt_eval_duration + r.eval_duration


def test_generate_streaming(client: ollama.Client) -> None:
    chunks = list(client.generate(model=MODEL, prompt="Tell me a joke.", stream=True, options=FEW))
    assert all(not c.done for c in chunks[:-1]) and chunks[-1].done
    assert "".join(c.response for c in chunks[:-1])
    assert chunks[-1].response == "" and chunks[-1].eval_count > 0


def test_chat_non_streaming(client: ollama.Client) -> None:
    r = client.chat(
        model=MODEL,
        messages=[
            {"role": "system", "content": "You answer briefly."},
            {"role": "user", "content": "What is the capital of France?"},
        ],
        options=FEW,
    )
    assert r.done and r.message.role == "assistant" and r.message.content
    assert r.prompt_eval_count > 0 and r.eval_count > 0


def test_chat_streaming(client: ollama.Client) -> None:
    chunks = list(
        client.chat(
            model=MODEL, messages=[{"role": "user", "content": "Hi!"}], stream=True, options=FEW
        )
    )
    assert chunks[-1].done and chunks[-1].done_reason in ("stop", "length")
    assert all(c.message.role == "assistant" for c in chunks)
    assert "".join(c.message.content for c in chunks[:-1])


def test_user_model_and_name_rules(client: ollama.Client, model_path) -> None:
    # "tiny" was registered without a tag: it is "tiny:latest", as Ollama names it.
    assert client.generate(model="tiny", prompt="Hi", options=FEW).eval_count > 0
    assert client.generate(model="tiny:latest", prompt="Hi", options=FEW).eval_count > 0
    for name in ("smollm2", str(model_path), "../" + model_path.name):
        with pytest.raises(ollama.ResponseError) as err:
            client.generate(model=name, prompt="Hi", options=FEW)
        assert err.value.status_code == 404
        assert err.value.error == f"model '{name}' not found"
    client.generate(model="tiny", prompt="", keep_alive=0)  # free it again


def test_load_then_ps_then_unload(client: ollama.Client) -> None:
    loaded = client.generate(model=MODEL, prompt="")
    assert loaded.done and loaded.done_reason == "load"
    models = {m.model: m for m in client.ps().models}
    assert MODEL in models
    assert models[MODEL].context_length == 4096
    assert models[MODEL].size_vram == 0
    assert models[MODEL].expires_at.timestamp() > time.time() + 60  # default keep_alive 5m

    unloaded = client.generate(model=MODEL, prompt="", keep_alive=0)
    assert unloaded.done and unloaded.done_reason == "unload"
    assert MODEL not in {m.model for m in client.ps().models}


def test_chat_load_and_unload(client: ollama.Client) -> None:
    assert client.chat(model=MODEL, messages=[]).done_reason == "load"
    assert MODEL in {m.model for m in client.ps().models}
    assert client.chat(model=MODEL, messages=[], keep_alive=0).done_reason == "unload"
    assert MODEL not in {m.model for m in client.ps().models}


def test_generation_with_keep_alive_zero_unloads_after(client: ollama.Client) -> None:
    r = client.generate(model=MODEL, prompt="Hello", options=FEW, keep_alive=0)
    assert r.eval_count > 0
    assert wait_until(lambda: MODEL not in {m.model for m in client.ps().models}, 5)


def test_keep_alive_expiry(client: ollama.Client) -> None:
    client.generate(model=MODEL, prompt="Hello", options=FEW, keep_alive="1s")
    ps = {m.model: m for m in client.ps().models}
    assert MODEL in ps and ps[MODEL].expires_at.timestamp() < time.time() + 5
    assert wait_until(lambda: MODEL not in {m.model for m in client.ps().models}, 6)


def test_keep_alive_forever(client: ollama.Client) -> None:
    client.generate(model=MODEL, prompt="", keep_alive=-1)
    ps = {m.model: m for m in client.ps().models}
    assert ps[MODEL].expires_at.year > 2200
    client.generate(model=MODEL, prompt="", keep_alive="5m")


def test_final_chunk_parses_as_metrics(http: httpx.Client) -> None:
    body = {"model": MODEL, "prompt": "Hi", "stream": False, "options": FEW}
    final = http.post("/api/generate", json=body).json()
    metrics = Metrics.from_json(final)
    assert metrics.eval_count > 0 and metrics.eval_rate > 0


def test_an_idle_connection_outlasts_uvicorns_default_keep_alive(embedded_server) -> None:
    # An agent waits for its turn in the solo phase with its connection open: after 6 s idle
    # (uvicorn's default keep-alive is 5 s) the next call still reuses that connection.
    with OllamaClient(embedded_server.url) as c:
        first = c.call("generate", MODEL, "Hello", options=FEW)
        time.sleep(6.0)
        later = c.call("generate", MODEL, "Hello", options=FEW)
    assert (first.reconnects, later.reconnects) == (1, 0)
