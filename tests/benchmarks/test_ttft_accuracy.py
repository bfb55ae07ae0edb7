"""``ttft_accuracy --quick``: the client's TTFT against servers whose time to first token is
known, through our clients, the peers' and a raw socket, on both APIs.

The ideal server writes the first token exactly TTFT after the request arrived: an error is
what the client adds, never negative beyond the clock's resolution and never a second TTFT.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

PEERS = ("aiohttp", "httpx-async", "httpx-sync", "ollama")
OURS = ("async", "sync", "raw")


@pytest.fixture(scope="module")
def result(quick: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
    return quick("ttft_accuracy")


def _medians(entry: dict[str, Any]) -> dict[str, float]:
    """Each client's and each coordinator's median TTFT error (ms) of one server's entry."""
    medians = {k: s["median"] for k, s in entry["client"].items()}
    medians.update({c: h["all_calls"]["median"] for c, h in entry["harness"].items()})
    return medians


def test_the_openai_path_times_the_first_content_delta(result: dict[str, Any]) -> None:
    p = result["details"]["parameters"]
    entry = result["details"]["openai"]["ideal"]
    # the ideal server sends the role-only chunk at once: TTFT taken there would be an error
    # of about -TTFT; the first content delta comes TTFT after the request
    medians = _medians(entry)
    assert set(medians) == {*OURS, "asyncio", "threads"}
    assert all(-1.0 < m < p["ttft_ms"] for m in medians.values()), medians
    # a phase per coordinator and run: one agent, two calls
    assert entry["harness"]["asyncio"]["all_calls"]["n"] == 2 * p["phases"]


def test_the_peers_are_measured_beside_ours(result: dict[str, Any]) -> None:
    p = result["details"]["parameters"]
    clients = result["details"]["servers"]["ideal"]["client"]
    assert set(clients) == {*OURS, *PEERS}
    for kind, s in clients.items():
        assert s["n"] == p["calls"] and -1.0 < s["median"] < p["ttft_ms"], (kind, s)
    assert result["details"]["peers"]["clients"] == list(PEERS)
