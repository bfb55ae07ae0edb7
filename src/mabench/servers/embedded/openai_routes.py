"""OpenAI's routes on the embedded server: ``GET /v1/models``, ``POST /v1/chat/completions``.

As Ollama serves ``/v1`` beside ``/api``, so does the embedded server, over the same scheduler
(one llama.cpp runner per model, the same queue and reload rule): one study can measure the
same model through both APIs. Chat completions are streamed as Server-Sent Events or answered
whole; a streamed answer opens with the assistant role, sends one content delta per piece of
text, ends with the finish chunk (which carries llama.cpp-style ``timings``: prompt and
predicted milliseconds), the usage chunk when ``stream_options.include_usage`` asks for it,
and ``data: [DONE]``. Sampling fields map to the Ollama options the runner takes
(``max_tokens`` is ``num_predict``); the model stays loaded for the server's default
keep-alive, as with Ollama's ``/v1``. Errors are OpenAI's error object.
"""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mabench.api.ollama import KeepAlive
from mabench.api.openai import (
    CHAT_PATH,
    MODELS_PATH,
    ChatCompletionRequest,
    CompletionShape,
    model_list,
)
from mabench.servers.embedded.http import json_response, read_json
from mabench.servers.embedded.ollama_routes import Generation, OllamaRoutes
from mabench.servers.embedded.runner import Prompt
from mabench.servers.embedded.wire import OpenAIWire

__all__ = ["OpenAIRoutes"]


class OpenAIRoutes:
    """The ``/v1`` routes, answered by the Ollama routes' scheduler."""

    def __init__(self, ollama: OllamaRoutes) -> None:
        self.ollama = ollama
        self.settings = ollama.settings

    def routes(self) -> list[Route]:
        return [
            Route(MODELS_PATH, self.models, methods=["GET"]),
            Route(CHAT_PATH, self.chat, methods=["POST"]),
        ]

    async def models(self, request: Request) -> Response:
        entries = self.settings.registry.entries()
        created = min((int(e.modified_at.timestamp()) for e in entries), default=0)
        return json_response(model_list([e.name for e in entries], "mabench", created))

    async def chat(self, request: Request) -> Response:
        started_ns = time.perf_counter_ns()
        body = await read_json(request, self.ollama.limit)
        req = ChatCompletionRequest.from_json(body)
        keep_alive = KeepAlive(self.settings.default_keep_alive_s)
        gen = Generation(
            "chat",
            req.model,
            req.stream,
            req.options,
            keep_alive,
            Prompt.for_chat(req.messages),
            started_ns,
        )
        wire = OpenAIWire(CompletionShape(req.model), req.include_usage)
        return self.ollama.respond(request, gen, wire)
