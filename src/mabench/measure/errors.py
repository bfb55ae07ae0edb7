"""Typed failures of the measurement core. Each says what failed, where, and what to do."""

from __future__ import annotations

from mabench.measure.records import ErrorInfo


class MabenchError(Exception):
    """Base class of every error the harness raises on purpose."""


class ServerCallError(MabenchError):
    """A call to an inference server failed, through either API (Ollama's or OpenAI's).

    ``kind`` is a stable machine-readable cause (``connect``, ``timeout``, ``http``,
    ``server``, ``protocol``); ``phase`` is the protocol step or measured phase it happened in.
    """

    kind = "call"

    def __init__(
        self,
        message: str,
        *,
        url: str,
        phase: str | None = None,
        status: int | None = None,
    ) -> None:
        self.message = message
        self.url = url
        self.phase = phase
        self.status = status
        where = f" during {phase}" if phase else ""
        code = f" (HTTP {status})" if status else ""
        super().__init__(f"{url}{where}: {message}{code}")

    def info(self) -> ErrorInfo:
        return ErrorInfo(
            kind=self.kind, message=self.message, url=self.url, phase=self.phase, status=self.status
        )


class ServerConnectError(ServerCallError):
    """Nothing answers at the URL (server down, wrong port)."""

    kind = "connect"


class ServerTimeoutError(ServerCallError):
    """The server stopped sending for longer than the configured timeout."""

    kind = "timeout"


class ServerHTTPError(ServerCallError):
    """The server answered with an error status and (usually) ``{"error": ...}``."""

    kind = "http"


class ServerStreamError(ServerCallError):
    """The server reported an error inside the stream (an NDJSON or SSE ``{"error": ...}``)."""

    kind = "server"


class ModelMismatchError(ServerCallError):
    """The server answered as another model than the one asked for: what it measured is not
    what the study names."""

    kind = "model"


class ProtocolError(ServerCallError):
    """The answer does not follow the server's API: invalid JSON, truncated stream, no metrics."""

    kind = "protocol"


class IsolationError(MabenchError):
    """A server still had a model loaded after the forced unload: the run would not be isolated."""


class ServerSetupError(MabenchError):
    """A server could not be started, found, or checked (port taken, model missing, no answer)."""


class RunFailed(MabenchError):
    """A run could not be completed; ``info`` says which server, phase and agent."""

    def __init__(self, message: str, info: ErrorInfo, agent: str | None = None) -> None:
        super().__init__(message)
        self.info = info
        self.agent = agent
