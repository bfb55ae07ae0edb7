"""One log line per request on stderr: endpoint, model, status, tokens, durations."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mabench.api.ollama import Metrics
from mabench.servers.embedded.http import LOG_KEY

log = logging.getLogger("mabench.servers.embedded")


class RequestLogMiddleware:
    """One line per request on stderr: endpoint, model, status, tokens, durations."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        fields: dict[str, Any] = scope.setdefault(LOG_KEY, {})
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
