"""JSON in and out of the embedded server: bounded request bodies, compact answers."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from mabench.api.ollama import RequestError, error_body

DEFAULT_MAX_BODY_BYTES = 1 << 20  # 1 MiB
#: the scope key under which a request collects the fields of its log line
LOG_KEY = "mabench.log"


def dumps(obj: Any) -> bytes:
    # errors="replace": a lone surrogate a client sent (e.g. in a model name) cannot break
    # the answer
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    return text.encode("utf-8", errors="replace")


def json_response(body: Any, status: int = 200) -> Response:
    return Response(dumps(body), status_code=status, media_type="application/json")


def error_response(message: str, status: int) -> Response:
    """Ollama's error answer."""
    return json_response(error_body(message), status)


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


def request_log(request: Request) -> dict[str, Any]:
    """The fields of this request's log line (see :mod:`.request_log`)."""
    return request.scope.setdefault(LOG_KEY, {})
