"""Ollama's routes on the embedded server, over one scheduler (a llama.cpp runner per model).

Routes: ``GET /`` ("Ollama is running"), ``GET /api/version`` (``{"version": <mabench
version>}``), ``GET /api/tags``, ``GET /api/ps``, ``POST /api/show``, ``POST /api/generate``,
``POST /api/chat``; shapes as in ollama's docs/api.md. OpenAI's ``/v1/models`` and
``/v1/chat/completions`` are served too, by the same scheduler
(:mod:`mabench.servers.embedded.openai_routes`); :mod:`mabench.servers.embedded.app` assembles
both. Where we differ from Ollama, on purpose:

* ``num_predict: 0`` evaluates the prompt and generates nothing: ``done_reason`` "length",
  ``eval_count`` 0, real ``prompt_eval_*`` (a prefill-only measurement).
* A prompt that does not fit in ``num_ctx`` is a 400 (Ollama truncates it); a generation that
  fills the context ends with ``done_reason`` "length" (Ollama shifts the context).
* The empty-prompt ``load``/``unload`` answers also carry ``total_duration`` and
  ``load_duration``.
* The deprecated ``context`` array is not returned; ``format``, ``images``, ``tools``,
  ``think``, ``suffix`` and ``template`` are ignored. Unknown options are ignored (as Ollama).
* Errors are ``{"error": ...}``: 400 malformed/missing/mistyped, 404 unknown model
  (``model 'x' not found``), 413 body over the limit, 503 queue full or shutting down, 500
  a llama.cpp failure; after the first streamed line, an NDJSON ``{"error": ...}`` line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from mabench import __version__
from mabench.api.ollama import (
    DEFAULT_KEEP_ALIVE_S,
    ROOT_TEXT,
    ChatRequest,
    Endpoint,
    GenerateRequest,
    GenerationShape,
    KeepAlive,
    Options,
    ShowRequest,
    models_body,
    version_body,
)
from mabench.servers.embedded.http import (
    DEFAULT_MAX_BODY_BYTES,
    json_response,
    read_json,
    request_log,
)
from mabench.servers.embedded.registry import Registry
from mabench.servers.embedded.runner import (
    GenerationResult,
    Prompt,
    Runner,
    RunnerDefaults,
    Sampling,
)
from mabench.servers.embedded.scheduler import DEFAULT_MAX_QUEUE, Scheduler
from mabench.servers.embedded.shapes import list_entry, ps_entry, show_body
from mabench.servers.embedded.streaming import GenerationResponse
from mabench.servers.embedded.wire import Wire

__all__ = ["Generation", "OllamaRoutes", "ServerSettings"]

log = logging.getLogger("mabench.servers.embedded")


@dataclass
class ServerSettings:
    registry: Registry
    defaults: RunnerDefaults = field(default_factory=RunnerDefaults)
    max_queue: int = DEFAULT_MAX_QUEUE
    default_keep_alive_s: float = DEFAULT_KEEP_ALIVE_S
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    version: str = __version__


@dataclass(frozen=True)
class Generation:
    """A parsed chat or generate request, as the scheduler serves it."""

    endpoint: Endpoint
    model: str
    stream: bool
    options: Options
    keep_alive: KeepAlive
    prompt: Prompt | None  # None: an empty prompt, i.e. load (or unload with keep_alive 0)
    started_ns: int


class OllamaRoutes:
    """Ollama's routes over one scheduler (one llama.cpp runner per model)."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.scheduler = Scheduler(
            settings.registry, settings.defaults, max_queue=settings.max_queue
        )
        self.limit = settings.max_body_bytes

    def routes(self) -> list[Route]:
        return [
            Route("/", self.root, methods=["GET", "HEAD"]),
            Route("/api/version", self.version, methods=["GET", "HEAD"]),
            Route("/api/tags", self.tags, methods=["GET", "HEAD"]),
            Route("/api/ps", self.ps, methods=["GET"]),
            Route("/api/show", self.show, methods=["POST"]),
            Route("/api/generate", self.generate, methods=["POST"]),
            Route("/api/chat", self.chat, methods=["POST"]),
        ]

    # -- management ------------------------------------------------------------------------

    async def root(self, request: Request) -> Response:
        return PlainTextResponse(ROOT_TEXT)

    async def version(self, request: Request) -> Response:
        return json_response(version_body(self.settings.version))

    async def tags(self, request: Request) -> Response:
        entries = self.settings.registry.entries()
        models = await asyncio.to_thread(lambda: [list_entry(e) for e in entries])
        return json_response(models_body(models))

    async def ps(self, request: Request) -> Response:
        loaded = self.scheduler.loaded_models()
        models = await asyncio.to_thread(lambda: [ps_entry(e, m) for e, m in loaded])
        return json_response(models_body(models))

    async def show(self, request: Request) -> Response:
        req = ShowRequest.from_json(await read_json(request, self.limit))
        request_log(request)["model"] = req.model
        entry = self.scheduler.entry(req.model)
        return json_response(await asyncio.to_thread(show_body, entry))

    # -- generation ------------------------------------------------------------------------

    async def generate(self, request: Request) -> Response:
        started_ns = time.perf_counter_ns()
        body = await read_json(request, self.limit)
        req = GenerateRequest.from_json(body, self.settings.default_keep_alive_s)
        prompt = Prompt.for_generate(req.prompt, req.system, req.raw) if req.prompt else None
        gen = Generation(
            "generate", req.model, req.stream, req.options, req.keep_alive, prompt, started_ns
        )
        return self.respond(request, gen)

    async def chat(self, request: Request) -> Response:
        started_ns = time.perf_counter_ns()
        body = await read_json(request, self.limit)
        req = ChatRequest.from_json(body, self.settings.default_keep_alive_s)
        prompt = Prompt.for_chat(req.messages) if req.messages else None
        gen = Generation(
            "chat", req.model, req.stream, req.options, req.keep_alive, prompt, started_ns
        )
        return self.respond(request, gen)

    def respond(self, request: Request, gen: Generation, wire: Wire | None = None) -> Response:
        """Admit the request (404 unknown model, 503 queue full) and answer its session in
        ``wire``'s shape (Ollama's, unless given)."""
        fields = request_log(request)
        fields["model"] = gen.model
        config = self.settings.defaults.resolve(gen.options)
        ticket = self.scheduler.admit(gen.model)
        keep_alive = gen.keep_alive
        if gen.prompt is None:  # load, or unload with keep_alive 0
            lifecycle: str | None = "unload" if keep_alive.unload_now else "load"
            events = self.scheduler.session(
                ticket, None if keep_alive.unload_now else config, keep_alive, None
            )
        else:
            lifecycle = None
            prompt, sampling = gen.prompt, Sampling.from_options(gen.options)

            def job(runner: Runner, emit, cancelled) -> GenerationResult:
                return runner.generate(prompt, sampling, emit, cancelled)

            events = self.scheduler.session(ticket, config, keep_alive, job)
        return GenerationResponse(
            events=events,
            ticket=ticket,
            shape=GenerationShape(gen.endpoint, gen.model),
            stream=gen.stream,
            lifecycle=lifecycle,
            started_ns=gen.started_ns,
            log_fields=fields,
            closing=lambda: self.scheduler.closing,
            wire=wire,
        )

    # -- life cycle and errors ---------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        # Hash the GGUF files (/api/tags and /api/ps show their digests) before the server
        # accepts a connection: hashing in the background would take CPU from whatever a
        # client measures first.
        await asyncio.to_thread(_hash_models, self.settings.registry)
        self.scheduler.start()
        try:
            yield
        finally:
            if not await self.scheduler.close():
                log.warning("a generation did not stop in time; leaving it to the process exit")


def _hash_models(registry: Registry) -> None:
    """Every registered GGUF's sha256, computed now (each is cached on its entry)."""
    start = time.perf_counter()
    for entry in registry.entries():
        try:
            log.info("model %s: sha256 %s", entry.name, entry.digest)
        except OSError as exc:
            log.warning("cannot hash %s: %s", entry.path, exc)
    log.info("model digests ready in %.2f s", time.perf_counter() - start)
