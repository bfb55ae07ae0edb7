"""Constants and helpers shared by the embedded-server tests (a uniquely named module, so it
cannot clash with another folder's helpers on sys.path)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx

from mabench.servers.embedded.registry import BUILTIN_MODEL

MODEL = BUILTIN_MODEL
#: Few tokens keep the suite fast on 2 cores (about 50 tokens/s at one thread).
FEW: dict[str, Any] = {"num_predict": 8}
#: A raw prompt the model continues for a long time (a counting sequence)...
COUNTING = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,"
#: ... when sampled greedily: sampled, it may stop after a dozen tokens (measured: 600 greedy
#: tokens without an end, 11-138 sampled ones).
LONG: dict[str, Any] = {"temperature": 0, "num_predict": 5000}


def ndjson(response: httpx.Response) -> Iterator[dict[str, Any]]:
    for line in response.iter_lines():
        if line.strip():
            yield json.loads(line)
