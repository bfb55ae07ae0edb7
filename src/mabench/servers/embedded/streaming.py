"""The answer to a generation: a scheduler session streamed (or not) in its API's shape
(Ollama's NDJSON or OpenAI's SSE: :mod:`mabench.servers.embedded.wire`)."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from mabench.api.ollama import GenerationShape, Metrics, RequestError
from mabench.servers.embedded.http import dumps
from mabench.servers.embedded.runner import Cancelled, GenerationResult
from mabench.servers.embedded.scheduler import Done, Loaded, Text, Ticket
from mabench.servers.embedded.wire import OllamaWire, Wire

log = logging.getLogger("mabench.servers.embedded")


class GenerationResponse(Response):
    """Runs a scheduler session and answers it in its API's shape (``wire``; Ollama's NDJSON
    of ``shape`` unless given).

    The status line is sent with the first generated text (or the final object), so anything
    that fails before (load, template, prompt too long, prefill) is a proper HTTP error; a
    failure after that is an error inside the stream (an NDJSON ``{"error": ...}`` line, an
    SSE error event). A client that disconnects cancels the generation (the worker stops
    before its next token).
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
        wire: Wire | None = None,
    ) -> None:
        super().__init__()
        self.events = events
        self.ticket = ticket
        self.shape = shape
        self.wire: Wire = wire or OllamaWire(shape)
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
        self._send = send
        self._started = False  # the 200 status line and the first NDJSON line are out
        self._load_ns = 0
        self._parts: list[str] = []
        try:
            async for event in self.events:
                if isinstance(event, Loaded):
                    self._load_ns = event.load_ns
                elif isinstance(event, Text):
                    await self._on_text(event.text)
                else:
                    await self._on_done(event)
                    return
            raise RuntimeError("the generation ended without a final event")
        except Cancelled:
            closing = self.closing()
            await self._fail(
                503, "server is shutting down" if closing else "the request was cancelled"
            )
        except RequestError as exc:
            await self._fail(exc.status, exc.message)
        except Exception as exc:
            log.exception("generation failed")
            await self._fail(500, f"{type(exc).__name__}: {exc}" if str(exc) else repr(exc))

    async def _on_text(self, text: str) -> None:
        if not self.stream:
            self._parts.append(text)
            return
        await self._write(self.wire.text(text))

    async def _on_done(self, event: Done) -> None:
        total_ns = time.perf_counter_ns() - self.started_ns
        if self.lifecycle is not None:
            body = self.shape.lifecycle(self.lifecycle, total_ns, self._load_ns)
            self.log_fields.update(done_reason=self.lifecycle, load_ns=self._load_ns)
            await self._send_json(200, body)
            return
        result: GenerationResult = event.result
        metrics = Metrics(
            total_duration=total_ns,
            load_duration=self._load_ns,
            prompt_eval_count=result.prompt_eval_count,
            prompt_eval_duration=result.prompt_eval_ns,
            eval_count=result.eval_count,
            eval_duration=result.eval_ns,
        )
        self.log_fields.update(metrics=metrics, done_reason=result.done_reason)
        if self.stream:
            await self._write(self.wire.end(result.done_reason, metrics), more=False)
        else:
            body = self.wire.body("".join(self._parts), result.done_reason, metrics)
            await self._send_json(200, body)

    async def _fail(self, status: int, message: str) -> None:
        """An HTTP error before anything was sent; an error inside the stream after."""
        self.log_fields["error"] = message
        if self._started:
            self.log_fields["status"] = "200+error"
            await self._write(self.wire.stream_error(message), more=False)
        else:
            await self._send_json(status, self.wire.error(message, status))

    async def _write(self, data: bytes, more: bool = True) -> None:
        """Framed stream bytes; the first go after the status line and the wire's opening."""
        if not self._started:
            headers = [(b"content-type", self.wire.media_type.encode())]
            await self._send({"type": "http.response.start", "status": 200, "headers": headers})
            self._started = True
            data = self.wire.opening() + data
        self._complete = not more
        await self._send({"type": "http.response.body", "body": data, "more_body": more})

    async def _send_json(self, status: int, body: dict[str, Any]) -> None:
        send = self._send
        data = dumps(body)
        self._complete = True
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(data)).encode()),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": data})
