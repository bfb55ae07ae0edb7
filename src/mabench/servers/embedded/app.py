"""The Starlette application of the embedded server: Ollama's routes
(:mod:`~mabench.servers.embedded.ollama_routes`) and OpenAI's
(:mod:`~mabench.servers.embedded.openai_routes`) over one scheduler, the error answers, and a
log line per request.

Errors are answered in the API's own shape: Ollama's ``{"error": ...}`` under ``/api``,
OpenAI's error object under ``/v1``; an unknown path is Ollama's plain ``404 page not found``.
"""

from __future__ import annotations

import logging

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from mabench.api.ollama import RequestError
from mabench.api.openai import error_body
from mabench.servers.embedded.http import error_response, json_response, request_log
from mabench.servers.embedded.ollama_routes import OllamaRoutes, ServerSettings
from mabench.servers.embedded.openai_routes import OpenAIRoutes
from mabench.servers.embedded.request_log import RequestLogMiddleware

__all__ = ["create_app"]

log = logging.getLogger("mabench.servers.embedded")


async def _on_request_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestError)
    request_log(request)["error"] = exc.message
    if request.url.path.startswith("/v1/"):  # OpenAI's routes answer OpenAI's error object
        return json_response(error_body(exc.message, exc.status), exc.status)
    return error_response(exc.message, exc.status)


async def _on_not_found(request: Request, exc: Exception) -> Response:
    return PlainTextResponse("404 page not found", status_code=404)


async def _on_crash(request: Request, exc: Exception) -> Response:
    log.exception("request failed", exc_info=exc)
    return error_response(f"internal error: {type(exc).__name__}: {exc}", 500)


def create_app(settings: ServerSettings) -> Starlette:
    routes = OllamaRoutes(settings)
    app = Starlette(
        routes=routes.routes() + OpenAIRoutes(routes).routes(),
        exception_handlers={
            RequestError: _on_request_error,
            404: _on_not_found,
            Exception: _on_crash,
        },
        lifespan=routes.lifespan,
    )
    app.add_middleware(RequestLogMiddleware)
    app.state.scheduler = routes.scheduler
    return app
