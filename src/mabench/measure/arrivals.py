"""When each piece of generated text arrived: the bookkeeping every stream parser shares.

A parser (Ollama's NDJSON today, an OpenAI-style SSE stream later) calls
:meth:`TokenArrivals.text` with the clock reading of each chunk that carries text; the run
record keeps the arrivals compactly (:func:`encode`): integer microseconds, delta-encoded, the
first counted from the request being sent, each next from the previous arrival. The gaps after
the first are the call's inter-token latencies (one chunk per token, as both servers stream).
"""

from __future__ import annotations


class TokenArrivals:
    """Arrival times (``perf_counter_ns``) of the text-bearing chunks of one streamed answer."""

    __slots__ = ("times_ns",)

    def __init__(self) -> None:
        self.times_ns: list[int] = []

    def text(self, now_ns: int) -> None:
        """A chunk with text arrived at ``now_ns``."""
        self.times_ns.append(now_ns)

    @property
    def first_ns(self) -> int | None:
        return self.times_ns[0] if self.times_ns else None

    @property
    def last_ns(self) -> int | None:
        return self.times_ns[-1] if self.times_ns else None


def encode(times_ns: list[int] | tuple[int, ...], t_sent_ns: int) -> list[int]:
    """Arrivals as delta-encoded integer microseconds: [first - sent, second - first, ...].

    The offsets from ``t_sent_ns`` are rounded first and the deltas taken between the rounded
    offsets, so their running sum gives every offset back to the microsecond (no drift)."""
    offsets = [round((t - t_sent_ns) / 1000) for t in times_ns]
    return [b - a for a, b in zip([0, *offsets], offsets, strict=False)]


__all__ = ["TokenArrivals", "encode"]
