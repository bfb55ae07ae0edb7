"""How a generation's answer is written on the wire: Ollama's NDJSON, or OpenAI's SSE.

:class:`~mabench.servers.embedded.streaming.GenerationResponse` runs a scheduler session the
same way for both APIs and asks its wire for the bytes: the streamed pieces (already framed),
the end of a stream, the non-streamed body, and the error in the API's own shape, before the
status line (an HTTP error) or after it (inside the stream).
"""

from __future__ import annotations

from typing import Any, Protocol

from mabench.api import openai
from mabench.api.ollama import GenerationShape, Metrics, error_body
from mabench.api.openai import DONE, SSE_MEDIA_TYPE, CompletionShape, Timings, Usage, sse_event
from mabench.servers.embedded.http import dumps

__all__ = ["OllamaWire", "OpenAIWire", "Wire"]


class Wire(Protocol):
    """One API's way of writing a generation's answer."""

    media_type: str  # of a streamed answer

    def opening(self) -> bytes:
        """What a stream starts with, sent with the first piece of text."""
        ...

    def text(self, text: str) -> bytes: ...

    def end(self, done_reason: str, metrics: Metrics) -> bytes:
        """The stream's last bytes (its final chunk)."""
        ...

    def body(self, text: str, done_reason: str, metrics: Metrics) -> dict[str, Any]:
        """The non-streamed answer."""
        ...

    def error(self, message: str, status: int) -> dict[str, Any]:
        """An error before anything was sent (the body of an HTTP error)."""
        ...

    def stream_error(self, message: str) -> bytes:
        """An error after the stream began (its last bytes)."""
        ...


class OllamaWire:
    """NDJSON: one JSON object per line (``/api/chat``, ``/api/generate``)."""

    media_type = "application/x-ndjson"

    def __init__(self, shape: GenerationShape) -> None:
        self.shape = shape

    def opening(self) -> bytes:
        return b""

    def text(self, text: str) -> bytes:
        return dumps(self.shape.chunk(text)) + b"\n"

    def end(self, done_reason: str, metrics: Metrics) -> bytes:
        return dumps(self.shape.final("", done_reason, metrics)) + b"\n"

    def body(self, text: str, done_reason: str, metrics: Metrics) -> dict[str, Any]:
        return self.shape.final(text, done_reason, metrics)

    def error(self, message: str, status: int) -> dict[str, Any]:
        return error_body(message)

    def stream_error(self, message: str) -> bytes:
        return dumps(error_body(message)) + b"\n"


class OpenAIWire:
    """Server-Sent Events of ``chat.completion.chunk`` objects (``/v1/chat/completions``):
    the role first, one content delta per piece, the finish chunk (with llama.cpp-style
    ``timings``), the usage chunk when the request asked for it, ``[DONE]``."""

    media_type = SSE_MEDIA_TYPE

    def __init__(self, shape: CompletionShape, include_usage: bool) -> None:
        self.shape = shape
        self.include_usage = include_usage

    def opening(self) -> bytes:
        return sse_event(self.shape.first())

    def text(self, text: str) -> bytes:
        return sse_event(self.shape.text(text))

    def end(self, done_reason: str, metrics: Metrics) -> bytes:
        out = sse_event(self.shape.finish(done_reason, Timings.of(metrics)))
        if self.include_usage:
            out += sse_event(self.shape.usage(Usage.of(metrics)))
        return out + sse_event(DONE)

    def body(self, text: str, done_reason: str, metrics: Metrics) -> dict[str, Any]:
        return self.shape.completion(text, done_reason, Usage.of(metrics), Timings.of(metrics))

    def error(self, message: str, status: int) -> dict[str, Any]:
        return openai.error_body(message, status)

    def stream_error(self, message: str) -> bytes:
        return sse_event(openai.error_body(message, 500))
