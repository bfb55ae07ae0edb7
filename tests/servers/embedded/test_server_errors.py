"""Each bad request gets its documented status and body, and the server keeps serving."""

from __future__ import annotations

import httpx
import ollama
import pytest
from embedded_support import FEW, MODEL

pytestmark = pytest.mark.timeout(120)


def still_serving(http: httpx.Client) -> None:
    assert http.get("/").text == "Ollama is running"
    body = {"model": MODEL, "prompt": "Hi", "stream": False, "options": {"num_predict": 2}}
    r = http.post("/api/generate", json=body)
    assert r.status_code == 200 and r.json()["done"] is True


def error_of(r: httpx.Response, status: int) -> str:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"} and isinstance(body["error"], str)
    return body["error"]


@pytest.mark.parametrize("path", ["/api/generate", "/api/chat", "/api/show"])
def test_malformed_json(http: httpx.Client, path: str) -> None:
    r = http.post(
        path,
        content=b'{"model": "smollm2:135m", "prompt": ',
        headers={"content-type": "application/json"},
    )
    assert error_of(r, 400).startswith("invalid JSON in request body")
    assert error_of(http.post(path, content=b""), 400) == "missing request body"
    assert error_of(http.post(path, content=b"\xff\xfe"), 400).startswith("invalid JSON")
    assert error_of(http.post(path, json=[1, 2]), 400) == "request body must be a JSON object"
    still_serving(http)


@pytest.mark.parametrize("path", ["/api/generate", "/api/chat", "/api/show"])
def test_missing_model(http: httpx.Client, path: str) -> None:
    assert error_of(http.post(path, json={"prompt": "hi"}), 400) == "model is required"
    assert error_of(http.post(path, json={"model": ""}), 400) == "model is required"
    still_serving(http)


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"temperature": "hot"}, "temperature"),
        ({"num_predict": 1.5}, "num_predict"),
        ({"num_ctx": "4096"}, "num_ctx"),
        ({"stop": [1, 2]}, "stop"),
        ({"use_mmap": 1}, "use_mmap"),
        ({"num_thread": 100000}, "num_thread"),
        ({"main_gpu": 2**40}, "main_gpu"),
    ],
)
def test_mistyped_option(http: httpx.Client, options: dict, name: str) -> None:
    for path, extra in (("/api/generate", {"prompt": "hi"}), ("/api/chat", {"messages": []})):
        body = {"model": MODEL, **extra, "options": options}
        assert name in error_of(http.post(path, json=body), 400)
    still_serving(http)


def test_other_mistyped_fields(http: httpx.Client) -> None:
    bad = [
        ("/api/generate", {"model": MODEL, "prompt": 3}),
        ("/api/generate", {"model": MODEL, "prompt": "hi", "stream": "yes"}),
        ("/api/generate", {"model": MODEL, "prompt": "hi", "keep_alive": "soon"}),
        ("/api/generate", {"model": MODEL, "prompt": "hi", "options": [1]}),
        ("/api/generate", {"model": 42, "prompt": "hi"}),
        ("/api/chat", {"model": MODEL, "messages": "hi"}),
        ("/api/chat", {"model": MODEL, "messages": [{"role": "robot", "content": "x"}]}),
        ("/api/chat", {"model": MODEL, "messages": [{"role": "user", "content": 5}]}),
    ]
    for path, body in bad:
        error_of(http.post(path, json=body), 400)
    still_serving(http)


@pytest.mark.parametrize("path", ["/api/generate", "/api/chat", "/api/show"])
def test_unknown_model(http: httpx.Client, path: str) -> None:
    r = http.post(path, json={"model": "nope:1b", "prompt": "hi", "messages": []})
    assert error_of(r, 404) == "model 'nope:1b' not found"
    r = http.post(path, json={"model": "/etc/passwd", "prompt": "hi"})
    assert error_of(r, 404) == "model '/etc/passwd' not found"
    still_serving(http)


def test_unknown_model_with_the_ollama_client(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as err:
        client.chat(model="nope:1b", messages=[{"role": "user", "content": "hi"}])
    assert err.value.status_code == 404
    assert err.value.error == "model 'nope:1b' not found"


def test_body_too_large(http: httpx.Client) -> None:
    big = {"model": MODEL, "prompt": "x" * (1 << 20), "options": FEW}
    assert "too large" in error_of(http.post("/api/generate", json=big), 413)

    def chunks():  # no Content-Length: the limit is enforced while reading
        yield b'{"model": "smollm2:135m", "prompt": "'
        for _ in range(40):
            yield b"y" * 65536
        yield b'"}'

    assert "too large" in error_of(http.post("/api/generate", content=chunks()), 413)
    still_serving(http)


def test_prompt_longer_than_context(http: httpx.Client) -> None:
    body = {"model": MODEL, "prompt": "word " * 400, "options": {"num_ctx": 256, **FEW}}
    message = error_of(http.post("/api/generate", json=body), 400)
    assert "num_ctx" in message
    still_serving(http)


def test_unknown_route(http: httpx.Client) -> None:
    assert http.get("/api/nothing").status_code == 404
    assert http.post("/api/pull", json={"model": MODEL}).status_code == 404
    still_serving(http)


def test_lone_surrogates_and_odd_values(http: httpx.Client) -> None:
    # JSON may escape a lone UTF-16 surrogate; Go (Ollama) turns it into U+FFFD
    body = b'{"model": "smollm2:135m", "prompt": "hi \\ud800", "stream": false, "options": {"num_predict": 2}}'
    assert http.post("/api/generate", content=body).json()["done"] is True
    r = http.post("/api/generate", content=b'{"model": "x\\udfff", "prompt": "hi"}')
    assert r.status_code == 404 and r.json()["error"].startswith("model 'x")
    odd = {"num_ctx": -5, "num_batch": 0, "seed": -7, "top_k": -3, "temperature": -1}
    body = {"model": MODEL, "prompt": "hi", "stream": False, "options": {**odd, "num_predict": 2}}
    assert http.post("/api/generate", json=body).json()["done"] is True
    r = http.post("/api/generate", content=b"[" * 100_000)
    assert error_of(r, 400).startswith("invalid JSON")
    still_serving(http)
