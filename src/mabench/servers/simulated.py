"""A simulated Ollama server with exact, known timing (and injectable faults).

It speaks the same APIs as Ollama and the embedded server (Ollama's ``/api``, and OpenAI's
``/v1/chat/completions`` and ``/v1/models``) but generates nothing: the first token of a call
arrives ``ttft_ms`` after the request (after ``load_ms`` more if the model has to be loaded),
then one token every ``token_ms``. In ``serialized`` mode one call runs at a time (FIFO, like
Ollama with NUM_PARALLEL=1); in ``parallel`` mode calls never wait for each other. With these
numbers known, the metrics a run must produce can be derived analytically, which is how the
tests and the overhead benchmarks check the harness itself.

``--busy-tokens-pct P`` makes the work depend on concurrency, as a server whose output changes
with its batch: a generation that overlaps another (in ``parallel`` mode) stops after P % of
its tokens, with ``done_reason`` "stop" (``finish_reason`` on ``/v1``). ``--intruder-after N``
loads a model named ``intruder:latest`` once N generations have been asked for, as another
client of the server would; ``/api/ps`` lists each loaded model with its ``num_ctx`` (4096
unless set).

Faults (``--fault``), applied to generation requests after the first ``--fault-after``:
``hang`` (accept, never answer), ``stall`` (two tokens, then silence, the connection left
open), ``invalid_json``, ``truncate`` (stream ends without a final chunk), ``no_metrics``
(final chunk lacks metrics), ``http500``, ``midstream_error`` (an NDJSON ``{"error": ...}``
line), ``die`` (the process exits in the middle of the stream, like a crash) and ``reset``
(the connection is reset mid-stream: a TCP RST, as a crashed proxy or a dropped route sends).
``--fault-after-tokens K`` makes a stream fault strike after K tokens (default 2 for
``stall``, 1 for the others). On ``/v1`` the same faults break the SSE stream, and
``no_metrics`` sends neither usage nor timings. ``--fault-once FILE`` makes the fault happen
once across all processes sharing FILE (a crash, then healthy restarts).

Two answers that look well-formed but are not what was asked: ``--answer-model NAME`` names
NAME as the answering model in every generation (a server that serves another model than the
one asked for: a default model, an alias), and ``--count-offset N`` reports N tokens more (or
fewer, negative) than it streamed (``eval_count``, ``usage.completion_tokens``,
``timings.predicted_n``).

``--prefix-cache`` caches prompts as vLLM's automatic prefix caching does: the part of a
prompt that begins like a prompt served before (in words, the simulation's tokens) skips its
share of the TTFT, and the answer says how many were cached (``usage.prompt_tokens_details
.cached_tokens``, llama.cpp's ``timings.cache_n`` where timings are sent, and on Ollama's API
fewer ``prompt_eval_count``); ``POST /reset_prefix_cache`` (vLLM's) and an unload empty it.

``--shape`` answers as a particular real server does, leaving out what it leaves out (the
conformance matrix, ``tests/conformance``, measures a study against each); see :data:`SHAPES`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import socket
import struct
import sys
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from mabench.api.ollama import (
    ROOT_TEXT,
    ChatRequest,
    GenerateRequest,
    GenerationShape,
    Metrics,
    ModelDetails,
    ModelSummary,
    Options,
    RequestError,
    error_body,
    models_body,
    rfc3339,
    show_body,
    version_body,
)
from mabench.api.openai import (
    CHAT_PATH,
    DONE,
    MODELS_PATH,
    SSE_MEDIA_TYPE,
    ChatCompletionRequest,
    CompletionShape,
    Timings,
    Usage,
    model_list,
    sse_event,
)
from mabench.api.openai import error_body as openai_error_body
from mabench.servers.net import LOOPBACK, free_port
from mabench.servers.process import ServerStartError, start_logged, wait_answering
from mabench.servers.process import stop as stop_process

DEFAULT_NUM_CTX = 4096
INTRUDER = "intruder:latest"  # the model another client loads (--intruder-after)
FAULTS = (
    "none",
    "hang",
    "stall",
    "invalid_json",
    "truncate",
    "no_metrics",
    "http500",
    "midstream_error",
    "die",
    "reset",
)

#: ``--shape``: which real server's answers to play. ``complete`` (the default) fills every
#: field, as our embedded server does. Ollama's answers (``/api``):
#:
#: - ``ollama-current``: Ollama since v0.9.7: every metric, ``/api/ps`` with ``context_length``;
#:   a load or unload answer carries no durations (server/routes.go answers an empty prompt
#:   with model, created_at, done and done_reason only);
#: - ``ollama-old``: Ollama v0.1.38 to v0.9.6 (api/types.go's ProcessModelResponse had no
#:   ContextLength until ollama/ollama@34088dbc, July 2025): ``/api/ps`` entries without
#:   ``context_length``, and load answers without durations;
#: - ``ollama-cached``: Ollama up to v0.1.48 (ollama/ollama#2068, #3427; fixed by #5371 in
#:   v0.1.49) answering prompts it had cached: the final chunk omits ``prompt_eval_count``
#:   and ``prompt_eval_duration`` (``omitempty`` on a 0). #3427 saw them missing on most
#:   calls; this shape omits them on every one, whatever the prompt (the harness salts its
#:   prompts against caches); ``/api/ps`` without ``context_length`` too;
#: - ``ollama-no-ps``: Ollama before v0.1.38 (server/routes.go had no ``/api/ps`` route
#:   until then): HTTP 404 for ``/api/ps``, so what a server holds cannot be listed.
#:
#: OpenAI's (``/v1/chat/completions``, streamed):
#:
#: - ``openai-current``: OpenAI's own, SGLang, Ollama's ``/v1`` since v0.5.2, llama.cpp's
#:   server since ggml-org/llama.cpp#15444: usage in a last chunk with an empty ``choices``
#:   list, only when ``stream_options.include_usage`` asks for it; no ``timings``;
#: - ``openai-no-usage``: llama-cpp-python's server (abetlen/llama-cpp-python#1640) and
#:   Ollama's ``/v1`` before v0.5.2: ``include_usage`` ignored, no usage, no ``timings``;
#: - ``openai-usage-every-chunk``: vLLM with ``continuous_usage_stats``: every chunk carries
#:   the usage so far, and the empty-``choices`` usage chunk still ends the stream;
#: - ``openai-finish-with-content``: vLLM (vllm-project/vllm#35705): the last content delta
#:   and ``finish_reason`` in one chunk, no separate finish chunk;
#: - ``openai-usage-in-finish``: llama.cpp's server before #15444 (August 2025): usage and
#:   ``timings`` in the finish chunk itself, asked for or not, and no empty-``choices`` chunk.
OLLAMA_SHAPES = ("ollama-current", "ollama-old", "ollama-cached", "ollama-no-ps")
OPENAI_SHAPES = (
    "openai-current",
    "openai-no-usage",
    "openai-usage-every-chunk",
    "openai-finish-with-content",
    "openai-usage-in-finish",
)
SHAPES = ("complete", *OLLAMA_SHAPES, *OPENAI_SHAPES)
#: Ollama shapes whose /api/ps predates ``context_length``
_PS_WITHOUT_CONTEXT = ("ollama-old", "ollama-cached")
#: Ollama shapes from before /api/ps
_NO_PS = ("ollama-no-ps",)


@dataclass
class SimSettings:
    """Timing, models, faults, and how the OpenAI routes answer (``usage``: ``include`` honours
    ``stream_options.include_usage``, ``never`` ignores it as llama-cpp-python's server does;
    ``timings``: add llama.cpp's ``timings``; ``api_key``: the key the /v1 routes require)."""

    ttft_ms: float = 100.0
    token_ms: float = 10.0
    load_ms: float = 50.0
    default_tokens: int = 16
    mode: str = "parallel"  # or "serialized"
    models: tuple[str, ...] = ("smollm2:135m",)
    fault: str = "none"
    fault_after: int = 0
    fault_once: str | None = (
        None  # a file: the first process to fault creates it, then no one faults
    )
    usage: str = "include"
    timings: bool = False
    api_key: str | None = field(default=None, repr=False)
    busy_tokens_pct: float = 100.0  # tokens a generation overlapping another one generates
    intruder_after: int | None = None  # generations after which another client loads a model
    shape: str = "complete"  # which real server's answers to play (SHAPES)
    prefix_cache: bool = False  # cache prompts' prefixes (vLLM's automatic prefix caching)
    fault_after_tokens: int | None = None  # tokens streamed before a stream fault (None: 2 or 1)
    answer_model: str | None = None  # the model every generation claims to be (None: as asked)
    count_offset: int = 0  # reported tokens minus streamed tokens


@dataclass
class SimState:
    settings: SimSettings
    loaded: dict[str, dict[str, Any]] = field(default_factory=dict)  # model -> runner options
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    generations: int = 0
    streaming: int = 0  # generations holding a slot right now
    prompts: list[tuple[str, ...]] = field(default_factory=list)  # --prefix-cache: served


#: what the simulated server says of each model it serves (it has no files)
_DETAILS = ModelDetails(format="sim", family="sim", parameter_size="0", quantization_level="none")
_MODIFIED_AT = "2025-01-01T00:00:00Z"
#: how long a loaded model stays loaded, as /api/ps shows it (the simulation never unloads)
_LOADED_FOR = timedelta(days=365)


def _summary(name: str) -> ModelSummary:
    return ModelSummary(
        name, size=1000, digest="0" * 64, details=_DETAILS, modified_at=_MODIFIED_AT
    )


def _claim(path: str) -> bool:
    """Atomically create ``path``; True for the one caller that did (``--fault-once``)."""
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse(error_body(message), status_code=status)


def _openai_error(status: int, message: str) -> JSONResponse:
    return JSONResponse(openai_error_body(message, status), status_code=status)


def _ndjson(obj: dict[str, Any]) -> bytes:
    return (json.dumps(obj) + "\n").encode()


def _without(body: dict[str, Any], *keys: str) -> dict[str, Any]:
    """``body`` less ``keys``: an answer as a server that leaves them out sends it."""
    return {k: v for k, v in body.items() if k not in keys}


#: the bytes that break a stream, per fault: NDJSON (Ollama) and Server-Sent Events (OpenAI)
NDJSON_FAULTS = {
    "invalid_json": b'{"model": "broken", "done": fal\n',
    "midstream_error": _ndjson(error_body("simulated failure during generation")),
}
SSE_FAULTS = {
    "invalid_json": b'data: {"choices": [{"delta": {"content": fal\n\n',
    "midstream_error": sse_event(openai_error_body("simulated failure during generation", 500)),
}


@dataclass
class Pace:
    """When a generation started (``perf_counter`` s), how long its load took (ns) and how
    many tokens it generated."""

    t0: float = 0.0
    load_ns: int = 0
    tokens: int = 0


@dataclass(frozen=True)
class _Generation:
    """One generation request as the simulated server serves it."""

    shape: GenerationShape  # its Ollama answer's objects (the model, chat or generate)
    options: Options
    n_tokens: int
    prompt_tokens: int
    fault: str
    cached_tokens: int = 0  # --prefix-cache: the prompt's words a served prompt began with
    peer: tuple[str, int] | None = None  # the client's address (the reset fault finds it so)


class SimServer:
    """The routes of one simulated server; its state lives as long as the app."""

    def __init__(self, settings: SimSettings) -> None:
        self.settings = settings
        self.state = SimState(settings)

    def app(self) -> Starlette:
        routes = [
            Route("/", self.root, methods=["GET", "HEAD"]),
            Route("/api/version", self.version),
            Route("/api/tags", self.tags),
            Route("/api/ps", self.ps),
            Route("/api/show", self.show, methods=["POST"]),
            Route("/api/pull", self.pull, methods=["POST"]),
            Route("/api/generate", self.generate, methods=["POST"]),
            Route("/api/chat", self.chat, methods=["POST"]),
            Route(MODELS_PATH, self.v1_models),
            Route(CHAT_PATH, self.v1_chat, methods=["POST"]),
        ]
        if self.settings.prefix_cache:
            routes.append(Route("/reset_prefix_cache", self.reset_prefix_cache, methods=["POST"]))
        return Starlette(routes=routes)

    # -- management ------------------------------------------------------------------------

    async def root(self, _: Request) -> Response:
        return PlainTextResponse(ROOT_TEXT)

    async def version(self, _: Request) -> Response:
        return JSONResponse(version_body(f"sim-{self.settings.mode}"))

    async def tags(self, _: Request) -> Response:
        return JSONResponse(models_body([_summary(m).tags_entry() for m in self.settings.models]))

    async def ps(self, _: Request) -> Response:
        if self.settings.shape in _NO_PS:
            return PlainTextResponse("404 page not found", status_code=404)  # as Go's mux says
        expires = rfc3339(datetime.now(UTC) + _LOADED_FOR)
        models = [
            _summary(m).ps_entry(expires, runner.get("num_ctx", DEFAULT_NUM_CTX))
            for m, runner in self.state.loaded.items()
        ]
        if self.settings.shape in _PS_WITHOUT_CONTEXT:
            models = [_without(entry, "context_length") for entry in models]
        return JSONResponse(models_body(models))

    async def show(self, request: Request) -> Response:
        body = await request.json()
        if body.get("model") not in self.settings.models:
            return _error(404, f"model '{body.get('model')}' not found")
        return JSONResponse(show_body(_DETAILS, {}, _MODIFIED_AT))

    async def pull(self, request: Request) -> Response:
        body = json.loads(await request.body() or b"{}")
        name = body.get("model") or body.get("name")

        async def progress() -> AsyncIterator[bytes]:
            yield b'{"status": "pulling manifest"}\n'
            if name in self.settings.models:
                yield b'{"status": "success"}\n'
            else:
                yield b'{"error": "pull model manifest: file does not exist"}\n'

        return StreamingResponse(progress(), media_type="application/x-ndjson")

    # -- generation ------------------------------------------------------------------------

    async def generate(self, request: Request) -> Response:
        return await self.generation(request, chat=False)

    async def chat(self, request: Request) -> Response:
        return await self.generation(request, chat=True)

    async def ensure_loaded(self, model: str, options: Options) -> int:
        """Load ``model`` with ``options``' runner options unless so loaded; the load's ns."""
        runner = options.runner()
        if self.state.loaded.get(model) == runner:
            return 0
        t0 = time.perf_counter_ns()
        await asyncio.sleep(self.settings.load_ms / 1000)
        self.state.loaded[model] = runner
        return time.perf_counter_ns() - t0

    async def generation(self, request: Request, chat: bool) -> Response:
        try:
            body = json.loads(await request.body())
            req = ChatRequest.from_json(body) if chat else GenerateRequest.from_json(body)
        except ValueError as exc:
            status = exc.status if isinstance(exc, RequestError) else 400
            return _error(status, str(exc))
        if req.model not in self.settings.models and req.model not in self.state.loaded:
            return _error(404, f"model '{req.model}' not found")
        if not (req.messages if chat else req.prompt):
            return await self.load_or_unload(req, chat)
        gen = self.plan(req, chat, _peer(request))
        if gen.fault == "http500":
            return _error(500, "simulated internal error")
        return StreamingResponse(self.stream(gen), media_type="application/x-ndjson")

    async def load_or_unload(self, req: ChatRequest | GenerateRequest, chat: bool) -> Response:
        """An empty prompt loads the model (or unloads it, with keep_alive 0), as in Ollama."""
        t0 = time.perf_counter_ns()
        if req.keep_alive.unload_now:
            self.state.loaded.pop(req.model, None)
            self.state.prompts.clear()  # an unloaded model keeps no cache
            reason, load_ns = "unload", 0
        else:
            reason, load_ns = "load", await self.ensure_loaded(req.model, req.options)
        shape = GenerationShape("chat" if chat else "generate", req.model)
        body = shape.lifecycle(reason, time.perf_counter_ns() - t0, load_ns)
        if self.settings.shape in OLLAMA_SHAPES:
            body = _without(body, "total_duration", "load_duration")
        return JSONResponse(body)

    def plan(
        self,
        req: ChatRequest | GenerateRequest,
        chat: bool,
        peer: tuple[str, int] | None = None,
    ) -> _Generation:
        """What this request generates, and which fault (if any) it meets."""
        self.state.generations += 1
        settings = self.settings
        if self.state.generations == settings.intruder_after:
            self.state.loaded[INTRUDER] = {}
        fault = settings.fault if self.state.generations > settings.fault_after else "none"
        if fault != "none" and settings.fault_once and not _claim(settings.fault_once):
            fault = "none"
        asked = req.options.num_predict
        text = " ".join(m.content for m in req.messages) if chat else req.prompt
        return _Generation(
            shape=GenerationShape("chat" if chat else "generate", self.answering(req.model)),
            options=req.options,
            n_tokens=asked if asked and asked > 0 else settings.default_tokens,
            prompt_tokens=max(1, len(text.split())),
            fault=fault,
            cached_tokens=self.cache_prompt(tuple(text.split())),
            peer=peer,
        )

    def answering(self, asked: str) -> str:
        """The model an answer names: ``--answer-model``, else the one asked for."""
        return self.settings.answer_model or asked

    def reported_tokens(self, pace: Pace) -> int:
        """The generated tokens the server reports: those it streamed, ``--count-offset``
        more."""
        return max(0, pace.tokens + self.settings.count_offset)

    def cache_prompt(self, words: tuple[str, ...]) -> int:
        """``--prefix-cache``: how many of ``words`` a prompt served before began with (at most
        all but the last, as a real server evaluates at least one token); then ``words`` is
        served too. 0 without the cache."""
        if not self.settings.prefix_cache:
            return 0
        cached = max((_common_prefix(words, seen) for seen in self.state.prompts), default=0)
        self.state.prompts.append(words)
        return min(cached, max(0, len(words) - 1))

    async def reset_prefix_cache(self, _: Request) -> Response:
        """vLLM's ``POST /reset_prefix_cache``: the cache emptied, an empty 200."""
        self.state.prompts.clear()
        return Response(status_code=200)

    def ttft_ms(self, gen: _Generation) -> float:
        """The TTFT of ``gen``: its cached share of the prompt skipped (``--prefix-cache``),
        never below one token's time."""
        uncached = 1 - gen.cached_tokens / gen.prompt_tokens
        return max(self.settings.token_ms, self.settings.ttft_ms * uncached)

    def cache_report(self, chunk: dict[str, Any], gen: _Generation) -> dict[str, Any]:
        """``chunk`` saying how many prompt tokens came from the cache (``--prefix-cache``):
        in its usage as vLLM and OpenAI do, in its timings as llama.cpp does."""
        if not self.settings.prefix_cache:
            return chunk
        out = dict(chunk)
        if isinstance(out.get("usage"), dict):
            details = {"cached_tokens": gen.cached_tokens}
            out["usage"] = {**out["usage"], "prompt_tokens_details": details}
        if isinstance(out.get("timings"), dict):
            out["timings"] = {**out["timings"], "cache_n": gen.cached_tokens}
        return out

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """One generation at a time in ``serialized`` mode (FIFO); no waiting in ``parallel``.
        ``state.streaming`` counts the generations holding a slot."""
        async with contextlib.AsyncExitStack() as stack:
            if self.settings.mode == "serialized":
                await stack.enter_async_context(self.state.lock)
            self.state.streaming += 1
            try:
                yield
            finally:
                self.state.streaming -= 1

    async def tokens(self, gen: _Generation, pace: Pace) -> AsyncIterator[int]:
        """Token indices, each at its time: the model loaded first (``pace`` keeps when the
        generation started, the load's ns and the tokens so far), then token i at ``ttft + i *
        token``; after ``busy_tokens_pct`` % of them if the generation overlapped another."""
        pace.t0 = time.perf_counter()
        pace.load_ns = await self.ensure_loaded(gen.shape.model, gen.options)
        start = time.perf_counter()
        if gen.fault == "hang":
            await asyncio.sleep(10**6)
        busy_limit = max(1, math.ceil(gen.n_tokens * self.settings.busy_tokens_pct / 100))
        overlapped = False
        for i in range(gen.n_tokens):
            deadline = start + (self.ttft_ms(gen) + i * self.settings.token_ms) / 1000
            await asyncio.sleep(max(0.0, deadline - time.perf_counter()))
            overlapped = overlapped or self.state.streaming > 1
            if overlapped and i >= busy_limit:
                return  # under concurrency this server generates less
            pace.tokens = i + 1
            yield i

    async def stream(self, gen: _Generation) -> AsyncIterator[bytes]:
        """The NDJSON stream: one token every ``token_ms`` after ``ttft_ms``, then metrics."""
        async with self.slot():
            pace = Pace()
            async for i in self.tokens(gen, pace):
                broken = await self.token_fault(gen, i, NDJSON_FAULTS)
                if broken is not None:
                    yield broken
                    return
                yield _ndjson(gen.shape.chunk(f"tok{i} "))
            if gen.fault != "truncate":
                yield _ndjson(self.final_chunk(gen, pace))

    def final_chunk(self, gen: _Generation, pace: Pace) -> dict[str, Any]:
        """The stream's last chunk: its metrics (none under ``no_metrics``), less the prompt's
        when playing ``ollama-cached``."""
        metrics = None if gen.fault == "no_metrics" else self.metrics(gen, pace)
        body = gen.shape.final("", self.finish(gen, pace), metrics)
        if self.settings.shape == "ollama-cached":
            body = _without(body, "prompt_eval_count", "prompt_eval_duration")
        elif self.settings.prefix_cache and "prompt_eval_count" in body:
            # as Ollama (since v0.1.49) does: only the prompt tokens it evaluated
            body["prompt_eval_count"] = gen.prompt_tokens - gen.cached_tokens
        return body

    async def token_fault(
        self, gen: _Generation, i: int, broken: Mapping[str, bytes]
    ) -> bytes | None:
        """The fault that strikes at token ``i`` (after ``--fault-after-tokens`` tokens): the
        bytes (``broken[fault]``, in the stream's own framing) that end the stream, or None."""
        fault = gen.fault
        default_k = 2 if fault == "stall" else 1
        k = (
            default_k
            if self.settings.fault_after_tokens is None
            else self.settings.fault_after_tokens
        )
        if i != k:
            return None
        if fault == "stall":
            await asyncio.sleep(10**6)
        if fault in broken:
            return broken[fault]
        if fault == "die":
            os._exit(17)
        if fault == "reset":
            _reset_connection(gen.peer)
        return None

    def durations_ns(self, tokens: int) -> tuple[int, int]:
        """The server's prompt-eval and eval durations of a generation of ``tokens`` (ns),
        from the settings."""
        settings = self.settings
        prompt = max(0, int((settings.ttft_ms - settings.token_ms) * 1e6))
        return prompt, int(tokens * settings.token_ms * 1e6)

    @staticmethod
    def finish(gen: _Generation, pace: Pace) -> str:
        """``length``: all the tokens asked for; ``stop``: fewer (--busy-tokens-pct)."""
        return "length" if pace.tokens == gen.n_tokens else "stop"

    def metrics(self, gen: _Generation, pace: Pace) -> Metrics:
        """The final metrics of ``gen``: its prompt and eval durations from the settings, its
        load and total as they happened."""
        prompt_ns, eval_ns = self.durations_ns(pace.tokens)
        return Metrics(
            total_duration=int((time.perf_counter() - pace.t0) * 1e9),
            load_duration=pace.load_ns,
            prompt_eval_count=gen.prompt_tokens,
            prompt_eval_duration=prompt_ns,
            eval_count=self.reported_tokens(pace),
            eval_duration=eval_ns,
        )

    # -- the OpenAI API (/v1) ----------------------------------------------------------------

    def unauthorized(self, request: Request) -> Response | None:
        """A 401 unless the request carries the required key (the key is never echoed)."""
        key = self.settings.api_key
        if key is None or request.headers.get("authorization") == f"Bearer {key}":
            return None
        return _openai_error(401, "Incorrect API key provided")

    async def v1_models(self, request: Request) -> Response:
        denied = self.unauthorized(request)
        if denied is not None:
            return denied
        return JSONResponse(model_list(list(self.settings.models), owned_by="mabench-sim"))

    async def v1_chat(self, request: Request) -> Response:
        denied = self.unauthorized(request)
        if denied is not None:
            return denied
        try:
            req = ChatCompletionRequest.from_json(json.loads(await request.body()))
        except ValueError as exc:
            status = exc.status if isinstance(exc, RequestError) else 400
            return _openai_error(status, str(exc))
        if req.model not in self.settings.models:
            return _openai_error(404, f"The model `{req.model}` does not exist")
        gen = self.plan(req, chat=True, peer=_peer(request))
        if gen.fault == "http500":
            return _openai_error(500, "simulated internal error")
        shape = CompletionShape(self.answering(req.model))
        if not req.stream:
            return await self.v1_completion(gen, shape)
        events = self.sse_stream(gen, shape, req.include_usage)
        return StreamingResponse(events, media_type=SSE_MEDIA_TYPE)

    async def sse_stream(
        self, gen: _Generation, shape: CompletionShape, include_usage: bool
    ) -> AsyncIterator[bytes]:
        """The SSE stream: the role at once (as OpenAI sends it), one content delta every
        ``token_ms`` after ``ttft_ms``, the finish chunk, usage if asked for, ``[DONE]``."""
        async with self.slot():
            pace = Pace()
            yield sse_event(self.running_usage(shape.first(), gen, pace))
            async for i in self.tokens(gen, pace):
                broken = await self.token_fault(gen, i, SSE_FAULTS)
                if broken is not None:
                    yield broken
                    return
                yield sse_event(self.token_chunk(gen, shape, pace, f"tok{i} "))
            if gen.fault == "truncate":
                return
            for chunk in self.closing_chunks(gen, shape, pace, include_usage):
                yield sse_event(chunk)
            yield sse_event(DONE)

    def running_usage(self, chunk: dict[str, Any], gen: _Generation, pace: Pace) -> dict[str, Any]:
        """``chunk`` with the usage so far, when playing ``openai-usage-every-chunk``."""
        if self.settings.shape != "openai-usage-every-chunk" or gen.fault == "no_metrics":
            return chunk
        return {**chunk, "usage": Usage(gen.prompt_tokens, self.reported_tokens(pace)).to_json()}

    def token_chunk(
        self, gen: _Generation, shape: CompletionShape, pace: Pace, text: str
    ) -> dict[str, Any]:
        """One content delta; the last one also carries ``finish_reason`` when playing
        ``openai-finish-with-content``."""
        chunk = shape.text(text)
        if self.finishes_with_content(gen, pace):
            chunk["choices"][0]["finish_reason"] = self.finish(gen, pace)
        return self.running_usage(chunk, gen, pace)

    def finishes_with_content(self, gen: _Generation, pace: Pace) -> bool:
        """The last content delta carries ``finish_reason`` (``openai-finish-with-content``;
        a generation cut short by ``--busy-tokens-pct`` still ends in a finish chunk)."""
        return self.settings.shape == "openai-finish-with-content" and pace.tokens == gen.n_tokens

    def closing_chunks(
        self, gen: _Generation, shape: CompletionShape, pace: Pace, include_usage: bool
    ) -> list[dict[str, Any]]:
        """What follows the last content delta: the finish chunk (unless the delta carried
        it), then usage if asked for and sent in a chunk of its own, as the shape plays it."""
        chunks = []
        tokens = self.reported_tokens(pace)
        usage = None if gen.fault == "no_metrics" else Usage(gen.prompt_tokens, tokens)
        if not self.finishes_with_content(gen, pace):
            finish = shape.finish(self.finish(gen, pace), self.timings(gen, pace))
            if self.settings.shape == "openai-usage-in-finish" and usage is not None:
                finish["usage"] = usage.to_json()
            chunks.append(self.running_usage(finish, gen, pace))
        if include_usage and usage is not None and self.sends_usage_chunk():
            chunks.append(shape.usage(usage))
        return [self.cache_report(c, gen) for c in chunks]

    def sends_usage_chunk(self) -> bool:
        """Whether ``include_usage`` gets its empty-``choices`` usage chunk."""
        never = ("openai-no-usage", "openai-usage-in-finish")
        return self.settings.usage == "include" and self.settings.shape not in never

    async def v1_completion(self, gen: _Generation, shape: CompletionShape) -> Response:
        """The non-streamed answer, sent when the last token would have been."""
        pace = Pace()
        async with self.slot():
            async for _ in self.tokens(gen, pace):
                pass
        text = "".join(f"tok{i} " for i in range(pace.tokens))
        usage = Usage(gen.prompt_tokens, self.reported_tokens(pace))
        finish = self.finish(gen, pace)
        return JSONResponse(shape.completion(text, finish, usage, self.timings(gen, pace)))

    def timings(self, gen: _Generation, pace: Pace) -> Timings | None:
        """llama.cpp's ``timings`` of ``gen`` when the settings add them."""
        llama_cpp = self.settings.shape == "openai-usage-in-finish"
        if not (self.settings.timings or llama_cpp) or gen.fault == "no_metrics":
            return None
        return Timings.of(self.metrics(gen, pace))


def build_app(settings: SimSettings) -> Starlette:
    return SimServer(settings).app()


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ttft-ms", type=float, default=100.0, help="time to first token (ms)")
    parser.add_argument("--token-ms", type=float, default=10.0, help="time per further token (ms)")
    parser.add_argument("--load-ms", type=float, default=50.0, help="time to load a model (ms)")
    parser.add_argument(
        "--tokens", type=int, default=16, help="tokens per call when num_predict is unset"
    )
    parser.add_argument("--mode", choices=("parallel", "serialized"), default="parallel")
    parser.add_argument(
        "--model", action="append", dest="models", help="model name served (repeatable)"
    )
    parser.add_argument("--fault", choices=FAULTS, default="none")
    parser.add_argument(
        "--fault-after", type=int, default=0, help="generations served normally first"
    )
    parser.add_argument(
        "--busy-tokens-pct",
        type=float,
        default=100.0,
        help="%% of its tokens a generation that overlaps another generates (default 100: "
        "the same work whatever the concurrency)",
    )
    parser.add_argument(
        "--intruder-after",
        type=int,
        default=None,
        metavar="N",
        help=f"once N generations were asked for, load {INTRUDER} as another client would",
    )
    parser.add_argument(
        "--keep-alive-s",
        type=float,
        default=5.0,
        help="seconds an idle HTTP connection stays open (uvicorn's default, 5)",
    )
    parser.add_argument(
        "--fault-once",
        metavar="FILE",
        help="fault only if FILE does not exist yet, and create it (one fault across processes)",
    )
    parser.add_argument(
        "--usage",
        choices=("include", "never"),
        default="include",
        help="/v1 streams: send usage when asked (include), or never (as llama-cpp-python)",
    )
    parser.add_argument(
        "--timings", action="store_true", help="/v1: add llama.cpp's timings (prompt, predicted)"
    )
    parser.add_argument(
        "--shape",
        choices=SHAPES,
        default="complete",
        help="answer as this real server does, leaving out what it leaves out (default "
        "complete: every field)",
    )
    parser.add_argument(
        "--prefix-cache",
        action="store_true",
        help="cache prompts' prefixes (vLLM's automatic prefix caching): a repeated prefix "
        "skips its share of the TTFT and is reported as cached; POST /reset_prefix_cache "
        "empties the cache",
    )
    parser.add_argument(
        "--fault-after-tokens",
        type=int,
        metavar="K",
        help="a stream fault strikes after K tokens (default: 2 for stall, 1 for the others)",
    )
    parser.add_argument(
        "--answer-model",
        metavar="NAME",
        help="every generation names NAME as its model (a server serving another model)",
    )
    parser.add_argument(
        "--count-offset",
        type=int,
        default=0,
        metavar="N",
        help="report N tokens more than were streamed (negative: fewer)",
    )
    parser.add_argument(
        "--api-key-env",
        metavar="NAME",
        help="/v1 routes require the API key held by environment variable NAME",
    )


def _api_key(env_name: str | None) -> str | None:
    if env_name is None:
        return None
    key = os.environ.get(env_name)
    if not key:
        raise SystemExit(f"sim-serve: --api-key-env {env_name}: that variable is not set")
    return key


def main(args: argparse.Namespace) -> int:
    settings = SimSettings(
        ttft_ms=args.ttft_ms,
        token_ms=args.token_ms,
        load_ms=args.load_ms,
        default_tokens=args.tokens,
        mode=args.mode,
        models=tuple(args.models or ["smollm2:135m"]),
        fault=args.fault,
        fault_after=args.fault_after,
        fault_once=args.fault_once,
        usage=args.usage,
        timings=args.timings,
        api_key=_api_key(args.api_key_env),
        busy_tokens_pct=args.busy_tokens_pct,
        intruder_after=args.intruder_after,
        shape=args.shape,
        prefix_cache=args.prefix_cache,
        fault_after_tokens=args.fault_after_tokens,
        answer_model=args.answer_model,
        count_offset=args.count_offset,
    )
    uvicorn.run(
        build_app(settings),
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        timeout_keep_alive=args.keep_alive_s,
    )
    return 0


class SimServerProcess:
    """A ``mabench sim-serve`` process on a free loopback port (for tests and benchmarks).

    ``settings`` are sim-serve options (``ttft_ms=100``, ``mode="parallel"``, ``fault="die"``;
    ``timings=True`` for a flag, a list for a repeated option: ``model=["a", "b"]``).
    Start several, then :meth:`wait_ready` each, so their start-ups overlap.
    """

    def __init__(self, log_dir: Path, **settings: object) -> None:
        self.port = free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        self.command = [sys.executable, "-m", "mabench", "sim-serve", "--port", str(self.port)]
        self.command += _flags(settings)
        self.log = log_dir / f"sim-{self.port}.log"
        self.proc = start_logged(self.command, self.log)

    def wait_ready(self, timeout_s: float = 60.0) -> SimServerProcess:
        """Wait until the server answers ``GET /``; stopped, and a
        :class:`~mabench.servers.process.ServerStartError`, if it does not."""
        try:
            wait_answering(
                self.proc,
                self.url,
                command=self.command,
                log_path=self.log,
                timeout_s=timeout_s,
                name="simulated server",
            )
        except ServerStartError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        stop_process(self.proc)


def _peer(request: Request) -> tuple[str, int] | None:
    """The client's address of ``request`` (None where the server does not say)."""
    client = request.client
    return None if client is None else (client.host, client.port)


class SimulatedReset(RuntimeError):
    """Raised inside a stream after its connection was set to reset: the server closes it,
    and the closing sends a TCP RST instead of a FIN."""


def _reset_connection(peer: tuple[str, int] | None) -> None:
    """Make the server's socket to ``peer`` close with a TCP RST (``SO_LINGER`` on, timeout
    0), then raise :class:`SimulatedReset` so that the server closes it mid-stream.

    The ASGI scope does not hold the socket: it is found among this process's descriptors
    (Linux's ``/proc/self/fd``) by its peer address; the option set through a duplicate holds
    for the socket itself."""
    if peer is None:
        raise RuntimeError("reset fault: the server did not say the client's address")
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            dup = socket.fromfd(int(name), socket.AF_INET, socket.SOCK_STREAM)
            with dup:
                if dup.getpeername()[:2] == peer:
                    dup.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    raise SimulatedReset(f"simulated connection reset (peer {peer[0]}:{peer[1]})")
    raise RuntimeError(f"reset fault: no socket to the peer {peer} found in /proc/self/fd")


def _common_prefix(a: tuple[str, ...], b: tuple[str, ...]) -> int:
    """How many leading items ``a`` and ``b`` share."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _flags(settings: Mapping[str, object]) -> list[str]:
    """sim-serve's command-line flags for ``settings`` (see :class:`SimServerProcess`)."""
    args: list[str] = []
    for key, value in settings.items():
        flag = f"--{key.replace('_', '-')}"
        values = value if isinstance(value, list | tuple) else [value]
        for v in values:
            args += [flag] if v is True else [flag, str(v)]
    return args
