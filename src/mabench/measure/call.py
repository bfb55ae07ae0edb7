"""One streamed call, whatever the API: prepared, read, and what it measured.

A client's ``prepare`` builds a :class:`PreparedCall` (the request's bytes and the parser of
its answer) and ``send`` sends it. Every parser keeps a :class:`StreamBookkeeping` (when the
request left, when each piece of text arrived, the text, the chunks) and ends in a
:class:`CallResult` with the server's own account of the call: Ollama's final
:class:`~mabench.api.ollama.Metrics`, or an OpenAI-compatible server's
:class:`CompletionMetrics`. A model load ends in a :class:`LoadResult`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mabench.api.ollama import Metrics
from mabench.api.openai import Timings, Usage
from mabench.measure.arrivals import TokenArrivals
from mabench.measure.errors import ModelMismatchError
from mabench.measure.transport import NDJSON, LineSink

__all__ = [
    "COUNT_SOURCES",
    "CallResult",
    "CompletionMetrics",
    "LoadResult",
    "PreparedCall",
    "StreamBookkeeping",
]

#: where a token count came from: the server's ``usage``, llama.cpp's ``timings``, or the
#: client counting the streamed content deltas
COUNT_SOURCES = ("usage", "timings", "stream")


@dataclass(frozen=True)
class CompletionMetrics:
    """What the client knows of one completion's server side. None where the server did not
    say: the API has no load time or total time, and the prompt and generation times only
    come with llama.cpp's ``timings``."""

    completion_tokens: int
    completion_tokens_source: str
    prompt_tokens: int | None
    prompt_tokens_source: str | None
    prompt_ms: float | None
    predicted_ms: float | None
    #: prompt tokens the server took from its prompt cache, as it reported them (None: it
    #: did not say): ``usage.prompt_tokens_details.cached_tokens`` or ``timings.cache_n``
    cached_prompt_tokens: int | None = None

    @classmethod
    def of(
        cls,
        usage: Usage | None,
        timings: Timings | None,
        deltas: int,
        cached_prompt_tokens: int | None = None,
    ) -> CompletionMetrics:
        """Counts from ``usage``, else ``timings``, else the counted deltas."""
        if usage is not None:
            completion, source = usage.completion_tokens, "usage"
        elif timings is not None:
            completion, source = timings.predicted_n, "timings"
        else:
            completion, source = deltas, "stream"
        prompt, prompt_source = None, None
        if usage is not None:
            prompt, prompt_source = usage.prompt_tokens, "usage"
        elif timings is not None:
            prompt, prompt_source = timings.prompt_n, "timings"
        return cls(
            completion_tokens=completion,
            completion_tokens_source=source,
            prompt_tokens=prompt,
            prompt_tokens_source=prompt_source,
            prompt_ms=None if timings is None else timings.prompt_ms,
            predicted_ms=None if timings is None else timings.predicted_ms,
            cached_prompt_tokens=cached_prompt_tokens,
        )


@dataclass(frozen=True)
class CallResult:
    """One streamed generation as the client saw it, plus what the server said of it: Ollama's
    final metrics, or an OpenAI-compatible server's counts and timings."""

    text: str
    t_sent_ns: int
    t_first_token_ns: int | None
    t_last_token_ns: int | None
    t_done_ns: int
    chunks: int
    metrics: Metrics | CompletionMetrics
    done_reason: str | None
    #: arrival (perf_counter_ns) of every chunk that carried text, in order
    arrivals_ns: tuple[int, ...] = ()
    #: connections the call opened: 0 when it reused the agent's open connection
    reconnects: int = 0


@dataclass(frozen=True)
class PreparedCall:
    """One streamed call, built and ready to leave: a client's ``prepare`` makes it (the
    request's bytes and its parser) and ``send`` sends it, once. The coordinators prepare each
    agent's first call before the phase starts, so that a phase's requests leave as soon as
    their agents are released, not one request's building after another."""

    path: str
    body: bytes
    #: what the transport feeds the answer's lines to (the parser, or the SSE framing over it)
    sink: LineSink
    #: the parser that keeps the call's timestamps and text (``result()``)
    parser: StreamBookkeeping
    phase: str | None
    accept: str = NDJSON


@dataclass(frozen=True)
class LoadResult:
    """A model load: the server's load time (None where the API does not report one)."""

    done_reason: str | None
    load_duration_ns: int | None
    wall_ns: int


class StreamBookkeeping:
    """What every stream parser keeps of one call, whatever the wire format: when the request
    left, when each piece of text arrived (:class:`~mabench.measure.arrivals.TokenArrivals`),
    the text, and how many chunks were read.

    A parser calls :meth:`chunk` for every chunk it reads, :meth:`text` for each piece of
    generated text with the clock reading of its arrival and :meth:`answered_as` with the
    model a chunk names; :meth:`call_result` assembles the :class:`CallResult` once the parser
    has the server's final metrics.
    """

    def __init__(self, url: str, phase: str | None, model: str | None = None) -> None:
        self.url = url
        self.phase = phase
        #: the model asked for; None once a chunk named it (or when not checked)
        self.model = model
        self.t_sent_ns = 0
        self.arrivals = TokenArrivals()
        self.parts: list[str] = []
        self.chunks = 0
        #: connections the transport opened for this call (set by the client after it)
        self.reconnects = 0

    def started(self, t_sent_ns: int) -> None:
        self.t_sent_ns = t_sent_ns

    def chunk(self) -> None:
        self.chunks += 1

    def answered_as(self, answered: object) -> None:
        """A chunk names ``answered`` as its model (checked at the first chunk that names
        one): another model than the one asked for fails the call, as the measurement would
        be of something else. Ollama's ``name`` and ``name:latest`` are the same model."""
        if self.model is None or not isinstance(answered, str):
            return
        asked, self.model = self.model, None
        if _tagged(answered) != _tagged(asked):
            raise ModelMismatchError(
                f"the server answered as model {answered!r}, not {asked!r} as asked: it "
                f"serves another model than the study names; serve {asked!r} under that name "
                "there, or name the model it serves in the study",
                url=self.url,
                phase=self.phase,
            )

    def text(self, now_ns: int, piece: str) -> None:
        """A non-empty piece of generated text arrived at ``now_ns``."""
        self.arrivals.text(now_ns)
        self.parts.append(piece)

    def call_result(self, metrics: Any, done_reason: str | None, t_done_ns: int) -> CallResult:
        """The call as measured; ``t_done_ns``: when the parser had read the final chunk."""
        return CallResult(
            text="".join(self.parts),
            t_sent_ns=self.t_sent_ns,
            t_first_token_ns=self.arrivals.first_ns,
            t_last_token_ns=self.arrivals.last_ns,
            t_done_ns=t_done_ns,
            chunks=self.chunks,
            metrics=metrics,
            done_reason=done_reason,
            arrivals_ns=tuple(self.arrivals.times_ns),
            reconnects=self.reconnects,
        )


def _tagged(name: str) -> str:
    """``name`` with Ollama's default tag (``:latest``) where it has none."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"
