"""A simulated Ollama server with exact, known timing (and injectable faults).

It speaks the same API as Ollama and the embedded server but generates nothing: the first
token of a call arrives ``ttft_ms`` after the request (after ``load_ms`` more if the model has
to be loaded), then one token every ``token_ms``. In ``serialized`` mode one call runs at a
time (FIFO, like Ollama with NUM_PARALLEL=1); in ``parallel`` mode calls never wait for each
other. With these numbers known, the metrics a run must produce can be derived analytically,
which is how the tests and the overhead benchmarks check the harness itself.

Faults (``--fault``), applied to generation requests after the first ``--fault-after``:
``hang`` (accept, never answer), ``stall`` (two tokens, then silence), ``invalid_json``,
``truncate`` (stream ends without a final chunk), ``no_metrics`` (final chunk lacks metrics),
``http500``, ``midstream_error`` (an NDJSON ``{"error": ...}`` line) and ``die`` (the process
exits in the middle of the stream, like a crash). ``--fault-once FILE`` makes the fault happen
once across all processes sharing FILE (a crash, then healthy restarts).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from mabench.measure.ollama_api import ChatRequest, GenerateRequest, Options, RequestError
from mabench.servers.net import LOOPBACK, answers, free_port, wait_until
from mabench.servers.supervise import stop as stop_process

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
)


@dataclass
class SimSettings:
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


@dataclass
class SimState:
    settings: SimSettings
    loaded: dict[str, dict[str, Any]] = field(default_factory=dict)  # model -> runner options
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    generations: int = 0


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _model_entry(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "model": name,
        "modified_at": "2025-01-01T00:00:00Z",
        "size": 1000,
        "digest": "0" * 64,
        "details": {
            "format": "sim",
            "family": "sim",
            "parameter_size": "0",
            "quantization_level": "none",
        },
    }


def _claim(path: str) -> bool:
    """Atomically create ``path``; True for the one caller that did (``--fault-once``)."""
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def build_app(settings: SimSettings) -> Starlette:
    state = SimState(settings)

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    async def root(_: Request) -> Response:
        return PlainTextResponse("Ollama is running")

    async def version(_: Request) -> Response:
        return JSONResponse({"version": f"sim-{settings.mode}"})

    async def tags(_: Request) -> Response:
        return JSONResponse({"models": [_model_entry(m) for m in settings.models]})

    async def ps(_: Request) -> Response:
        expires = (datetime.now(UTC) + timedelta(days=365)).isoformat()
        models = [
            {**_model_entry(m), "expires_at": expires, "size_vram": 0, "context_length": 4096}
            for m in state.loaded
        ]
        return JSONResponse({"models": models})

    async def show(request: Request) -> Response:
        body = await request.json()
        if body.get("model") not in settings.models:
            return error(404, f"model '{body.get('model')}' not found")
        return JSONResponse(
            {
                "details": _model_entry(body["model"])["details"],
                "model_info": {},
                "capabilities": ["completion"],
            }
        )

    async def ensure_loaded(model: str, options: Options) -> int:
        runner = options.runner()
        if state.loaded.get(model) == runner:
            return 0
        t0 = time.perf_counter_ns()
        await asyncio.sleep(settings.load_ms / 1000)
        state.loaded[model] = runner
        return time.perf_counter_ns() - t0

    async def generation(request: Request, chat: bool) -> Response:
        try:
            body = json.loads(await request.body())
            req = ChatRequest.from_json(body) if chat else GenerateRequest.from_json(body)
        except ValueError as exc:
            status = exc.status if isinstance(exc, RequestError) else 400
            return error(status, str(exc))
        if req.model not in settings.models:
            return error(404, f"model '{req.model}' not found")
        empty = not req.messages if chat else not req.prompt
        if empty:
            if req.keep_alive.unload_now:
                state.loaded.pop(req.model, None)
                reason, load_ns = "unload", 0
            else:
                reason, load_ns = "load", await ensure_loaded(req.model, req.options)
            final = {
                "model": req.model,
                "created_at": _now(),
                "done": True,
                "done_reason": reason,
                "load_duration": load_ns,
            }
            final.update(
                {"message": {"role": "assistant", "content": ""}} if chat else {"response": ""}
            )
            return JSONResponse(final)

        state.generations += 1
        fault = settings.fault if state.generations > settings.fault_after else "none"
        if fault != "none" and settings.fault_once and not _claim(settings.fault_once):
            fault = "none"
        if fault == "http500":
            return error(500, "simulated internal error")
        n_tokens = (
            req.options.num_predict
            if req.options.num_predict and req.options.num_predict > 0
            else settings.default_tokens
        )
        prompt_tokens = max(
            1, len((req.prompt if not chat else " ".join(m.content for m in req.messages)).split())
        )

        def chunk(piece: str) -> bytes:
            obj: dict[str, Any] = {"model": req.model, "created_at": _now(), "done": False}
            obj.update(
                {"message": {"role": "assistant", "content": piece}}
                if chat
                else {"response": piece}
            )
            return (json.dumps(obj) + "\n").encode()

        async def stream() -> AsyncIterator[bytes]:
            if settings.mode == "serialized":
                await state.lock.acquire()
            try:
                t0 = time.perf_counter()
                load_ns = await ensure_loaded(req.model, req.options)
                start = time.perf_counter()
                if fault == "hang":
                    await asyncio.sleep(10**6)
                for i in range(n_tokens):
                    deadline = start + (settings.ttft_ms + i * settings.token_ms) / 1000
                    await asyncio.sleep(max(0.0, deadline - time.perf_counter()))
                    if i == 2 and fault == "stall":
                        await asyncio.sleep(10**6)
                    if i == 1 and fault == "invalid_json":
                        yield b'{"model": "broken", "done": fal\n'
                        return
                    if i == 1 and fault == "midstream_error":
                        yield b'{"error": "simulated failure during generation"}\n'
                        return
                    if i == 1 and fault == "die":
                        os._exit(17)
                    yield chunk(f"tok{i} ")
                if fault == "truncate":
                    return
                end = time.perf_counter()
                final: dict[str, Any] = {
                    "model": req.model,
                    "created_at": _now(),
                    "done": True,
                    "done_reason": "length",
                }
                final.update(
                    {"message": {"role": "assistant", "content": ""}} if chat else {"response": ""}
                )
                if fault != "no_metrics":
                    eval_ns = int(n_tokens * settings.token_ms * 1e6)
                    final.update(
                        total_duration=int((end - t0) * 1e9),
                        load_duration=load_ns,
                        prompt_eval_count=prompt_tokens,
                        prompt_eval_duration=max(
                            0, int((settings.ttft_ms - settings.token_ms) * 1e6)
                        ),
                        eval_count=n_tokens,
                        eval_duration=eval_ns,
                    )
                yield (json.dumps(final) + "\n").encode()
            finally:
                if settings.mode == "serialized":
                    state.lock.release()

        return StreamingResponse(stream(), media_type="application/x-ndjson")

    async def pull(request: Request) -> Response:
        body = json.loads(await request.body() or b"{}")
        name = body.get("model") or body.get("name")

        async def progress() -> AsyncIterator[bytes]:
            yield b'{"status": "pulling manifest"}\n'
            if name in settings.models:
                yield b'{"status": "success"}\n'
            else:
                yield b'{"error": "pull model manifest: file does not exist"}\n'

        return StreamingResponse(progress(), media_type="application/x-ndjson")

    async def generate(request: Request) -> Response:
        return await generation(request, chat=False)

    async def chat(request: Request) -> Response:
        return await generation(request, chat=True)

    routes = [
        Route("/", root, methods=["GET", "HEAD"]),
        Route("/api/version", version),
        Route("/api/tags", tags),
        Route("/api/ps", ps),
        Route("/api/show", show, methods=["POST"]),
        Route("/api/pull", pull, methods=["POST"]),
        Route("/api/generate", generate, methods=["POST"]),
        Route("/api/chat", chat, methods=["POST"]),
    ]
    return Starlette(routes=routes)


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
        "--fault-once",
        metavar="FILE",
        help="fault only if FILE does not exist yet, and create it (one fault across processes)",
    )


def main(args: argparse.Namespace) -> int:
    import uvicorn

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
    )
    uvicorn.run(
        build_app(settings), host=args.host, port=args.port, log_level="warning", access_log=False
    )
    return 0


class SimServerProcess:
    """A ``mabench sim-serve`` process on a free loopback port (for tests and benchmarks).

    ``settings`` are sim-serve options (``ttft_ms=100``, ``mode="parallel"``, ``fault="die"``).
    Start several, then :meth:`wait_ready` each, so their start-ups overlap.
    """

    def __init__(self, log_dir: Path, **settings: object) -> None:
        self.port = free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        args = [sys.executable, "-m", "mabench", "sim-serve", "--port", str(self.port)]
        for key, value in settings.items():
            args += [f"--{key.replace('_', '-')}", str(value)]
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log = log_dir / f"sim-{self.port}.log"
        with open(self.log, "wb") as fh:
            self.proc = subprocess.Popen(args, stdout=fh, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout_s: float = 60.0) -> SimServerProcess:
        if not wait_until(lambda: self.proc.poll() is None and answers(self.url, 1.0), timeout_s):
            self.stop()
            raise RuntimeError(f"sim server did not start: {self.log.read_text()[-2000:]}")
        return self

    def stop(self) -> None:
        stop_process(self.proc)
