"""The OpenAI chat-completions API contract: one typed definition shared by our client and servers.

Mirrors OpenAI's API reference (``POST /v1/chat/completions``, the chat completion and chunk
objects, ``GET /v1/models``, the error object) for every field the benchmark uses, as vLLM,
SGLang, TGI, llama.cpp's server, LM Studio and Ollama's ``/v1`` serve it:

* requests are parsed and validated here (servers) and built here (client); sampling options
  map from Ollama's :class:`~mabench.api.ollama.Options` (``num_predict`` is
  ``max_tokens``); options the API has no field for are refused with the key named;
* a streamed answer is Server-Sent Events: ``data: <chunk JSON>`` events, the first content
  delta is the first token, the chunk with a ``finish_reason`` ends the generation, an
  optional usage chunk follows (``stream_options.include_usage``), then ``data: [DONE]``;
* token counts come from ``usage``; llama.cpp's server adds ``timings`` (prompt and predicted
  milliseconds), which :class:`Timings` reads. Nothing else of the server's timing is in the API.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from mabench.api.ollama import Message, Metrics, Options, OptionsError, RequestError

__all__ = [
    "CHAT_PATH",
    "DONE",
    "MODELS_PATH",
    "OPTION_FIELDS",
    "SSE_MEDIA_TYPE",
    "ChatCompletionRequest",
    "CompletionShape",
    "StreamChunk",
    "Timings",
    "Usage",
    "error_body",
    "model_ids",
    "model_list",
    "parse_completion",
    "request_fields",
    "sse_event",
    "unsupported_options",
]

CHAT_PATH = "/v1/chat/completions"
MODELS_PATH = "/v1/models"
SSE_MEDIA_TYPE = "text/event-stream"
#: the data of the event that ends a stream
DONE = "[DONE]"

#: Ollama option -> the OpenAI request field it maps to. Every other option (runner options
#: such as num_ctx, num_gpu, num_thread; sampling options the API does not define, such as
#: top_k or repeat_penalty) has no OpenAI equivalent.
OPTION_FIELDS: dict[str, str] = {
    "temperature": "temperature",
    "top_p": "top_p",
    "seed": "seed",
    "num_predict": "max_tokens",
    "stop": "stop",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
}
_FIELD_OPTIONS = {v: k for k, v in OPTION_FIELDS.items()}


# ---------------------------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------------------------


def unsupported_options(options: Options) -> list[str]:
    """The set options that have no OpenAI request field (sorted)."""
    return sorted(k for k in options.to_dict() if k not in OPTION_FIELDS)


def request_fields(options: Options) -> dict[str, Any]:
    """The OpenAI request fields of ``options``; an option without one is an :class:`OptionsError`."""
    unsupported = unsupported_options(options)
    if unsupported:
        raise OptionsError(
            f"option {unsupported[0]!r} has no OpenAI API equivalent (the API takes "
            f"{', '.join(sorted(OPTION_FIELDS))})"
        )
    return {OPTION_FIELDS[k]: v for k, v in options.to_dict().items()}


# ---------------------------------------------------------------------------------------------
# Requests
# ---------------------------------------------------------------------------------------------

#: request role -> our message role (OpenAI's "developer" messages are system messages)
_ROLES = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
}


def _message(item: Any, index: int) -> Message:
    """One chat message; ``content`` is a string or an array of text parts."""
    if not isinstance(item, dict):
        raise RequestError(f"messages[{index}] must be an object")
    role = item.get("role")
    if role not in _ROLES:
        raise RequestError(f"messages[{index}].role must be one of {sorted(_ROLES)}")
    content = item.get("content")
    if content is None:
        content = ""
    elif isinstance(content, list):
        texts = []
        for j, part in enumerate(content):
            if not (isinstance(part, dict) and part.get("type") == "text"):
                raise RequestError(f"messages[{index}].content[{j}]: only text parts are served")
            if not isinstance(part.get("text"), str):
                raise RequestError(f"messages[{index}].content[{j}].text must be a string")
            texts.append(part["text"])
        content = "".join(texts)
    elif not isinstance(content, str):
        raise RequestError(f"messages[{index}].content must be a string or an array of parts")
    return Message(role=_ROLES[role], content=content)


def _stream_settings(body: dict[str, Any]) -> tuple[bool, bool]:
    """``stream`` and ``stream_options.include_usage``."""
    stream = body.get("stream")
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise RequestError(f"stream must be a boolean, got {stream!r}")
    opts = body.get("stream_options")
    if opts is None:
        return stream, False
    if not isinstance(opts, dict):
        raise RequestError("stream_options must be an object")
    if not stream:
        raise RequestError("stream_options is only allowed when stream is true")
    include = opts.get("include_usage", False)
    if not isinstance(include, bool):
        raise RequestError(f"stream_options.include_usage must be a boolean, got {include!r}")
    return stream, include


def _sampling(body: dict[str, Any]) -> Options:
    """The sampling fields of a request as Ollama options (``max_completion_tokens`` wins over
    ``max_tokens``, as in OpenAI's API)."""
    values: dict[str, Any] = {}
    for name in ("temperature", "top_p", "seed", "stop", "presence_penalty", "frequency_penalty"):
        if body.get(name) is not None:
            values[_FIELD_OPTIONS[name]] = body[name]
    for name in ("max_tokens", "max_completion_tokens"):
        if body.get(name) is not None:
            values["num_predict"] = body[name]
    try:
        options = Options.from_mapping(values)
    except OptionsError as exc:
        message = exc.message.replace("option ", "", 1).replace("'num_predict'", "'max_tokens'")
        raise RequestError(message) from None
    if options.num_predict is not None and options.num_predict < 0:
        raise RequestError(f"max_tokens must be 0 or more, got {options.num_predict}")
    return options


@dataclass(frozen=True)
class ChatCompletionRequest:
    """``POST /v1/chat/completions`` (text only; ``n`` must be 1)."""

    model: str
    messages: tuple[Message, ...]
    stream: bool = False
    include_usage: bool = False
    options: Options = field(default_factory=Options)

    @classmethod
    def from_json(cls, body: Any) -> ChatCompletionRequest:
        if not isinstance(body, dict):
            raise RequestError("request body must be a JSON object")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise RequestError("model is required (a string)")
        raw = body.get("messages")
        if not isinstance(raw, list) or not raw:
            raise RequestError("messages must be a non-empty array")
        if body.get("n") not in (None, 1):
            raise RequestError(f"n must be 1, got {body.get('n')!r}")
        stream, include_usage = _stream_settings(body)
        return cls(
            model=model,
            messages=tuple(_message(m, i) for i, m in enumerate(raw)),
            stream=stream,
            include_usage=include_usage,
            options=_sampling(body),
        )

    @classmethod
    def for_prompt(
        cls,
        model: str,
        prompt: str,
        system: str | None,
        options: Options,
        *,
        stream: bool = True,
    ) -> ChatCompletionRequest:
        """A user prompt (after an optional system prompt), as the harness sends it."""
        messages = [Message("system", system)] if system else []
        messages.append(Message("user", prompt))
        return cls(model, tuple(messages), stream, stream, options)

    def to_json(self) -> dict[str, Any]:
        """The request body; a streamed one asks for usage (``stream_options.include_usage``)."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [m.to_json() for m in self.messages],
            "stream": self.stream,
        }
        if self.stream and self.include_usage:
            body["stream_options"] = {"include_usage": True}
        body.update(request_fields(self.options))
        return body


# ---------------------------------------------------------------------------------------------
# Responses: what the client reads
# ---------------------------------------------------------------------------------------------


def _count(obj: dict[str, Any], key: str, where: str) -> int:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{where} has no valid {key!r} (got {value!r})")
    return value


def _milliseconds(obj: dict[str, Any], key: str) -> float:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"timings has no valid {key!r} (got {value!r})")
    if value < 0:
        raise ValueError(f"timings.{key} is negative ({value!r})")
    return float(value)


@dataclass(frozen=True)
class Usage:
    """Token counts of one completion (``usage``)."""

    prompt_tokens: int
    completion_tokens: int

    @classmethod
    def of(cls, metrics: Metrics) -> Usage:
        """The token counts of a generation's final metrics."""
        return cls(metrics.prompt_eval_count or 0, metrics.eval_count)  # a server knows it

    @classmethod
    def from_json(cls, obj: Any) -> Usage:
        if not isinstance(obj, dict):
            raise ValueError(f"usage is not an object: {obj!r}")
        return cls(_count(obj, "prompt_tokens", "usage"), _count(obj, "completion_tokens", "usage"))

    def to_json(self) -> dict[str, int]:
        total = self.prompt_tokens + self.completion_tokens
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": total,
        }


@dataclass(frozen=True)
class Timings:
    """llama.cpp server's ``timings`` extension: prompt and generation time on the server."""

    prompt_n: int
    prompt_ms: float
    predicted_n: int
    predicted_ms: float

    @classmethod
    def of(cls, metrics: Metrics) -> Timings:
        """The server's split of a generation's final metrics, in milliseconds."""
        return cls(
            prompt_n=metrics.prompt_eval_count or 0,  # a server building its answer knows both
            prompt_ms=(metrics.prompt_eval_duration or 0) / 1e6,
            predicted_n=metrics.eval_count,
            predicted_ms=metrics.eval_duration / 1e6,
        )

    @classmethod
    def from_json(cls, obj: Any) -> Timings:
        if not isinstance(obj, dict):
            raise ValueError(f"timings is not an object: {obj!r}")
        return cls(
            prompt_n=_count(obj, "prompt_n", "timings"),
            prompt_ms=_milliseconds(obj, "prompt_ms"),
            predicted_n=_count(obj, "predicted_n", "timings"),
            predicted_ms=_milliseconds(obj, "predicted_ms"),
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"prompt_n": self.prompt_n, "prompt_ms": self.prompt_ms}
        out["predicted_n"] = self.predicted_n
        out["predicted_ms"] = self.predicted_ms
        return out


@dataclass(frozen=True)
class StreamChunk:
    """What one ``chat.completion.chunk`` says: its text, whether it ends the generation, and
    the usage and timings it carries (each None when absent)."""

    content: str
    finish_reason: str | None
    usage: Usage | None
    timings: Timings | None

    @classmethod
    def from_json(cls, obj: Any) -> StreamChunk:
        """Read a chunk; a wrong shape is a :class:`ValueError` naming the field."""
        if not isinstance(obj, dict):
            raise ValueError("chunk is not an object")
        choices = obj.get("choices")
        if choices is None:
            choices = []
        if not isinstance(choices, list):
            raise ValueError("chunk 'choices' is not an array")
        content, finish = "", None
        if choices:
            choice = choices[0]
            if not isinstance(choice, dict):
                raise ValueError("chunk choice is not an object")
            delta = choice.get("delta") or {}
            if not isinstance(delta, dict):
                raise ValueError("chunk delta is not an object")
            content = delta.get("content") or ""
            if not isinstance(content, str):
                raise ValueError(f"chunk content is not a string: {content!r}")
            finish = choice.get("finish_reason")
            if finish is not None and not isinstance(finish, str):
                raise ValueError(f"finish_reason is not a string: {finish!r}")
        usage = None if obj.get("usage") is None else Usage.from_json(obj["usage"])
        timings = None if obj.get("timings") is None else Timings.from_json(obj["timings"])
        return cls(content, finish, usage, timings)


def parse_completion(obj: Any) -> tuple[str, str | None, Usage | None]:
    """A non-streamed ``chat.completion``: its text, finish reason and usage."""
    if not isinstance(obj, dict) or not isinstance(obj.get("choices"), list) or not obj["choices"]:
        raise ValueError("completion has no 'choices'")
    choice = obj["choices"][0]
    message = choice.get("message") if isinstance(choice, dict) else None
    if not isinstance(message, dict):
        raise ValueError("completion choice has no 'message'")
    text = message.get("content") or ""
    if not isinstance(text, str):
        raise ValueError(f"completion content is not a string: {text!r}")
    usage = None if obj.get("usage") is None else Usage.from_json(obj["usage"])
    return text, choice.get("finish_reason"), usage


def model_ids(payload: Any) -> list[str]:
    """The model ids of a ``GET /v1/models`` answer."""
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, list) or not all(
        isinstance(m, dict) and isinstance(m.get("id"), str) for m in data
    ):
        raise ValueError("models answer has no 'data' list of objects with an 'id'")
    return [m["id"] for m in data]


# ---------------------------------------------------------------------------------------------
# Responses: what our servers send
# ---------------------------------------------------------------------------------------------


def sse_event(data: dict[str, Any] | str) -> bytes:
    """One Server-Sent Event carrying ``data`` (an object as compact JSON, or a string)."""
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return b"data: " + text.encode("utf-8", errors="replace") + b"\n\n"


_ERROR_TYPES = {401: "authentication_error", 404: "not_found_error", 429: "rate_limit_error"}


def error_body(message: str, status: int) -> dict[str, Any]:
    """OpenAI's error object: ``{"error": {"message", "type", "param", "code"}}``."""
    kind = _ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def model_list(ids: list[str], owned_by: str, created: int = 0) -> dict[str, Any]:
    """The ``GET /v1/models`` answer."""
    data = [{"id": i, "object": "model", "created": created, "owned_by": owned_by} for i in ids]
    return {"object": "list", "data": data}


class CompletionShape:
    """The objects of one completion (one id and creation time for all its chunks)."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())

    def _base(self, kind: str) -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}

    def chunk(self, delta: dict[str, str], finish_reason: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return {**self._base("chat.completion.chunk"), "choices": [choice]}

    def first(self) -> dict[str, Any]:
        """The opening chunk: the assistant role, no content yet (as OpenAI sends it)."""
        return self.chunk({"role": "assistant", "content": ""})

    def text(self, text: str) -> dict[str, Any]:
        return self.chunk({"content": text})

    def finish(self, reason: str, timings: Timings | None = None) -> dict[str, Any]:
        out = self.chunk({}, reason)
        if timings is not None:
            out["timings"] = timings.to_json()
        return out

    def usage(self, usage: Usage) -> dict[str, Any]:
        """The chunk ``include_usage`` asks for: no choices, the usage of the whole completion."""
        return {**self._base("chat.completion.chunk"), "choices": [], "usage": usage.to_json()}

    def completion(
        self, text: str, reason: str, usage: Usage, timings: Timings | None = None
    ) -> dict[str, Any]:
        """The non-streamed answer."""
        message = {"role": "assistant", "content": text}
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": reason}
        out = {**self._base("chat.completion"), "choices": [choice], "usage": usage.to_json()}
        if timings is not None:
            out["timings"] = timings.to_json()
        return out
