"""The Starlette application: Ollama's routes, request limits, per-request log lines.

Routes: ``GET /`` ("Ollama is running"), ``GET /api/version`` (``{"version": <mabench
version>}``), ``GET /api/tags``, ``GET /api/ps``, ``POST /api/show``, ``POST /api/generate``,
``POST /api/chat``; shapes as in ollama's docs/api.md. Where we differ from Ollama, on purpose:

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
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mabench import __version__
from mabench.measure.ollama_api import (
    DEFAULT_KEEP_ALIVE_S,
    ChatRequest,
    GenerateRequest,
    KeepAlive,
    Metrics,
    RequestError,
    ShowRequest,
)
from mabench.servers.embedded.registry import Registry
from mabench.servers.embedded.runner import (
    Cancelled,
    GenerationResult,
    Prompt,
    Runner,
    RunnerDefaults,
    Sampling,
)
from mabench.servers.embedded.scheduler import (
    DEFAULT_MAX_QUEUE,
    Done,
    Loaded,
    Scheduler,
    Text,
    Ticket,
)
from mabench.servers.embedded.shapes import GenerationShape, list_entry, ps_entry, show_body

__all__ = ["DEFAULT_MAX_BODY_BYTES", "ServerSettings", "create_app"]

log = logging.getLogger("mabench.servers.embedded")

DEFAULT_MAX_BODY_BYTES = 1 << 20  # 1 MiB
_LOG_KEY = "mabench.log"


@dataclass
class ServerSettings:
    registry: Registry
    defaults: RunnerDefaults = field(default_factory=RunnerDefaults)
    max_queue: int = DEFAULT_MAX_QUEUE
    default_keep_alive_s: float = DEFAULT_KEEP_ALIVE_S
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    version: str = __version__


# ---------------------------------------------------------------------------------------------
# Request helpers
# ---------------------------------------------------------------------------------------------


def _dumps(obj: Any) -> bytes:
    # errors="replace": a lone surrogate a client sent (e.g. in a model name) cannot break
    # the answer
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    return text.encode("utf-8", errors="replace")


def _json(body: Any, status: int = 200) -> Response:
    return Response(_dumps(body), status_code=status, media_type="application/json")


def _error(message: str, status: int) -> Response:
    return _json({"error": message}, status)


async def read_json(request: Request, limit: int) -> Any:
    """The JSON body, at most ``limit`` bytes (413 beyond), 400 when missing or malformed."""
    too_large = RequestError(f"request body too large: the limit is {limit} bytes", 413)
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large
    if not body.strip():
        raise RequestError("missing request body")
    try:
        return json.loads(body)
    except UnicodeDecodeError:
        raise RequestError("invalid JSON in request body: not UTF-8") from None
    except ValueError as exc:
        raise RequestError(f"invalid JSON in request body: {exc}") from None
    except RecursionError:
        raise RequestError("invalid JSON in request body: nested too deeply") from None


def _request_log(request: Request) -> dict[str, Any]:
    return request.scope.setdefault(_LOG_KEY, {})


# ---------------------------------------------------------------------------------------------
# The streaming / non-streaming generation response
# ---------------------------------------------------------------------------------------------


class GenerationResponse(Response):
    """Runs a scheduler session and answers it in Ollama's shape.

    The status line is sent with the first generated text (or the final object), so anything
    that fails before (load, template, prompt too long, prefill) is a proper HTTP error; a
    failure after that is an NDJSON ``{"error": ...}`` line. A client that disconnects cancels
    the generation (the worker stops before its next token).
    """

    def __init__(
        self,
        *,
        events: AsyncIterator[Loaded | Text | Done],
        ticket: Ticket,
        shape: GenerationShape,
        stream: bool,
        lifecycle: str | None,
        started_ns: int,
        log_fields: dict[str, Any],
        closing: Callable[[], bool],
    ) -> None:
        super().__init__()
        self.events = events
        self.ticket = ticket
        self.shape = shape
        self.stream = stream
        self.lifecycle = lifecycle
        self.started_ns = started_ns
        self.log_fields = log_fields
        self.closing = closing
        self._complete = False  # the last byte is being sent: a disconnect now is normal

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with anyio.create_task_group() as tg:

                async def watch_disconnect() -> None:
                    while True:
                        message = await receive()
                        if message["type"] == "http.disconnect":
                            if not self._complete:
                                self.log_fields["disconnected"] = True
                            tg.cancel_scope.cancel()
                            return

                tg.start_soon(watch_disconnect)
                await self._respond(send)
                tg.cancel_scope.cancel()
        finally:
            with contextlib.suppress(Exception):
                await self.events.aclose()
            self.ticket.discard()

    async def _respond(self, send: Send) -> None:
        started = False
        load_ns = 0
        parts: list[str] = []

        async def start(content_type: str) -> None:
            headers = [(b"content-type", content_type.encode())]
            await send({"type": "http.response.start", "status": 200, "headers": headers})

        async def line(obj: dict[str, Any], more: bool = True) -> None:
            data = _dumps(obj) + b"\n"
            self._complete = not more
            await send({"type": "http.response.body", "body": data, "more_body": more})

        try:
            async for event in self.events:
                if isinstance(event, Loaded):
                    load_ns = event.load_ns
                elif isinstance(event, Text):
                    if not self.stream:
                        parts.append(event.text)
                        continue
                    if not started:
                        await start("application/x-ndjson")
                        started = True
                    await line(self.shape.chunk(event.text))
                else:
                    total_ns = time.perf_counter_ns() - self.started_ns
                    if self.lifecycle is not None:
                        body = self.shape.lifecycle(self.lifecycle, total_ns, load_ns)
                        self.log_fields.update(done_reason=self.lifecycle, load_ns=load_ns)
                        await self._send_json(send, 200, body)
                        return
                    result: GenerationResult = event.result
                    metrics = Metrics(
                        total_duration=total_ns,
                        load_duration=load_ns,
                        prompt_eval_count=result.prompt_eval_count,
                        prompt_eval_duration=result.prompt_eval_ns,
                        eval_count=result.eval_count,
                        eval_duration=result.eval_ns,
                    )
                    self.log_fields.update(metrics=metrics, done_reason=result.done_reason)
                    if not self.stream:
                        text = "".join(parts)
                        body = self.shape.final(text, result.done_reason, metrics)
                        await self._send_json(send, 200, body)
                        return
                    if not started:
                        await start("application/x-ndjson")
                        started = True
                    await line(self.shape.final("", result.done_reason, metrics), more=False)
                    return
            raise RuntimeError("the generation ended without a final event")
        except Cancelled:
            status, message = (
                503,
                ("server is shutting down" if self.closing() else "the request was cancelled"),
            )
        except RequestError as exc:
            status, message = exc.status, exc.message
        except Exception as exc:
            log.exception("generation failed")
            status, message = 500, f"{type(exc).__name__}: {exc}" if str(exc) else repr(exc)
        self.log_fields["error"] = message
        if started:
            self.log_fields["status"] = "200+error"
            await line({"error": message}, more=False)
        else:
            await self._send_json(send, status, {"error": message})

    async def _send_json(self, send: Send, status: int, body: dict[str, Any]) -> None:
        data = _dumps(body)
        self._complete = True
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(data)).encode()),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": data})


# ---------------------------------------------------------------------------------------------
# Per-request log line
# ---------------------------------------------------------------------------------------------


class RequestLogMiddleware:
    """One line per request on stderr: endpoint, model, status, tokens, durations."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        fields: dict[str, Any] = scope.setdefault(_LOG_KEY, {})
        start = time.perf_counter()
        status: list[int] = []

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            elapsed_ms = (time.perf_counter() - start) * 1e3
            log.info(_format_log(scope, fields, status[0] if status else 0, elapsed_ms))


def _format_log(scope: Scope, fields: dict[str, Any], status: int, elapsed_ms: float) -> str:
    out = [f"{scope['method']} {scope['path']}", f"status={fields.get('status', status)}"]
    if "model" in fields:
        out.append(f"model={fields['model']}")
    metrics: Metrics | None = fields.get("metrics")
    if metrics is not None:
        out += [
            f"prompt_tokens={metrics.prompt_eval_count}",
            f"eval_tokens={metrics.eval_count}",
            f"load_ms={metrics.load_duration / 1e6:.1f}",
            f"prefill_ms={metrics.prompt_eval_duration / 1e6:.1f}",
            f"eval_ms={metrics.eval_duration / 1e6:.1f}",
        ]
    elif "load_ns" in fields:
        out.append(f"load_ms={fields['load_ns'] / 1e6:.1f}")
    if "done_reason" in fields:
        out.append(f"done_reason={fields['done_reason']}")
    out.append(f"total_ms={elapsed_ms:.1f}")
    if fields.get("disconnected"):
        out.append("client_disconnected")
    if "error" in fields:
        out.append(f"error={json.dumps(fields['error'])}")
    return " ".join(out)


# ---------------------------------------------------------------------------------------------
# The application
# ---------------------------------------------------------------------------------------------


def create_app(settings: ServerSettings) -> Starlette:
    scheduler = Scheduler(settings.registry, settings.defaults, max_queue=settings.max_queue)
    limit = settings.max_body_bytes

    async def root(request: Request) -> Response:
        return PlainTextResponse("Ollama is running")

    async def version(request: Request) -> Response:
        return _json({"version": settings.version})

    async def tags(request: Request) -> Response:
        entries = settings.registry.entries()
        models = await asyncio.to_thread(lambda: [list_entry(e) for e in entries])
        return _json({"models": models})

    async def ps(request: Request) -> Response:
        loaded = scheduler.loaded_models()
        models = await asyncio.to_thread(lambda: [ps_entry(e, m) for e, m in loaded])
        return _json({"models": models})

    async def show(request: Request) -> Response:
        req = ShowRequest.from_json(await read_json(request, limit))
        _request_log(request)["model"] = req.model
        entry = scheduler.entry(req.model)
        return _json(await asyncio.to_thread(show_body, entry))

    def respond(
        request: Request,
        *,
        endpoint: str,
        model: str,
        stream: bool,
        options,
        keep_alive: KeepAlive,
        prompt: Prompt | None,
        started_ns: int,
    ) -> Response:
        fields = _request_log(request)
        fields["model"] = model
        config = settings.defaults.resolve(options)
        sampling = Sampling.from_options(options)
        ticket = scheduler.admit(model)  # 404 unknown model, 503 queue full
        if prompt is None:  # empty prompt / no messages: load, or unload with keep_alive 0
            lifecycle = "unload" if keep_alive.unload_now else "load"
            events = scheduler.session(
                ticket, None if keep_alive.unload_now else config, keep_alive, None
            )
        else:
            lifecycle = None

            def job(runner: Runner, emit, cancelled) -> GenerationResult:
                return runner.generate(prompt, sampling, emit, cancelled)

            events = scheduler.session(ticket, config, keep_alive, job)
        return GenerationResponse(
            events=events,
            ticket=ticket,
            shape=GenerationShape(endpoint, model),
            stream=stream,
            lifecycle=lifecycle,
            started_ns=started_ns,
            log_fields=fields,
            closing=lambda: scheduler.closing,
        )

    async def generate(request: Request) -> Response:
        started_ns = time.perf_counter_ns()
        body = await read_json(request, limit)
        req = GenerateRequest.from_json(body, settings.default_keep_alive_s)
        prompt = Prompt.for_generate(req.prompt, req.system, req.raw) if req.prompt else None
        return respond(
            request,
            endpoint="generate",
            model=req.model,
            stream=req.stream,
            options=req.options,
            keep_alive=req.keep_alive,
            prompt=prompt,
            started_ns=started_ns,
        )

    async def chat(request: Request) -> Response:
        started_ns = time.perf_counter_ns()
        body = await read_json(request, limit)
        req = ChatRequest.from_json(body, settings.default_keep_alive_s)
        prompt = Prompt.for_chat(req.messages) if req.messages else None
        return respond(
            request,
            endpoint="chat",
            model=req.model,
            stream=req.stream,
            options=req.options,
            keep_alive=req.keep_alive,
            prompt=prompt,
            started_ns=started_ns,
        )

    async def on_request_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestError)
        _request_log(request)["error"] = exc.message
        return _error(exc.message, exc.status)

    async def on_not_found(request: Request, exc: Exception) -> Response:
        return PlainTextResponse("404 page not found", status_code=404)

    async def on_crash(request: Request, exc: Exception) -> Response:
        log.exception("request failed", exc_info=exc)
        return _error(f"internal error: {type(exc).__name__}: {exc}", 500)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        scheduler.start()
        # Hash the GGUF files in the background: /api/tags and /api/ps show their digests.
        threading.Thread(target=_warm_digests, args=(settings.registry,), daemon=True).start()
        try:
            yield
        finally:
            if not await scheduler.close():
                log.warning("a generation did not stop in time; leaving it to the process exit")

    app = Starlette(
        routes=[
            Route("/", root, methods=["GET", "HEAD"]),
            Route("/api/version", version, methods=["GET", "HEAD"]),
            Route("/api/tags", tags, methods=["GET", "HEAD"]),
            Route("/api/ps", ps, methods=["GET"]),
            Route("/api/show", show, methods=["POST"]),
            Route("/api/generate", generate, methods=["POST"]),
            Route("/api/chat", chat, methods=["POST"]),
        ],
        exception_handlers={
            RequestError: on_request_error,
            404: on_not_found,
            Exception: on_crash,
        },
        lifespan=lifespan,
    )
    app.add_middleware(RequestLogMiddleware)
    app.state.scheduler = scheduler
    return app


def _warm_digests(registry: Registry) -> None:
    for entry in registry.entries():
        try:
            _ = entry.digest
        except OSError as exc:
            log.warning("cannot hash %s: %s", entry.path, exc)
