"""Benchmark 2 -- TTFT accuracy: client TTFT minus the server's known time to first token.

Calls are made one at a time (no concurrency) against servers whose time to first token is
known, and the client's TTFT (first non-empty token received − request handed to the socket,
as ``mabench.measure.client`` measures it) is compared with it:

* ``ideal`` server (:mod:`benchmarks.idealserver`): writes the first token exactly ``ttft``
  after the last byte of the request was received, with µs-resolution timers. The error is
  what the client adds: building and sending the request, the loopback, reading and parsing
  the first chunk. **The goal is evaluated here.**
* ``sim`` server (``mabench sim-serve``): starts its ``ttft`` timer only after Starlette has
  parsed the request and sent the response headers, and sleeps with the event loop's
  millisecond timer resolution; its own processing adds to the error (reported, not the goal).
* ``raw`` reference client: one ``sendall`` of a pre-built request on a kept-alive socket,
  then ``recv`` until the first token. Its error is the floor set by the server and the OS; the
  client error above it is mabench's (request building, :mod:`mabench.measure.transport`, parsing).

Two paths per server:

* ``client``: one persistent client per kind (``AsyncOllamaClient``, ``OllamaClient``, raw),
  calls rotated through the kinds, so drift hits all equally;
* ``harness``: as run records are measured: per "run", a fresh coordinator
  (``mabench.measure.coordinators.open_coordinator``), the agent's unmeasured warm-up call, then a
  solo phase of one agent and two calls. ``asyncio`` uses the async client, ``threads`` the
  sync one.

The peers (``details.peers``, :mod:`benchmarks.peers`): on the ideal server, through the
Ollama API, the ``client`` path's rotation also calls one persistent client of each library
the field uses (aiohttp, httpx async and sync, the official ``ollama`` AsyncClient), TTFT from
right before the library's call to its first non-empty text chunk.

The OpenAI path: both paths again on the ideal server, through the OpenAI API (streamed
``/v1/chat/completions`` read as Server-Sent Events; TTFT at the first content delta, after
the role-only chunk the server sends at once), with the same goal (``details.openai``).
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any

from benchmarks import peers
from benchmarks.common import Result, log, servers, summary

TITLE = "TTFT accuracy: client TTFT minus the server's known time to first token"
FULL = {"ttft_ms": 50.0, "token_ms": 5.0, "num_predict": 2, "calls": 200, "phases": 60}
QUICK = {"ttft_ms": 20.0, "token_ms": 2.0, "num_predict": 2, "calls": 20, "phases": 5}
GOAL_MS = 2.0
MODEL = "smollm2:135m"
PROMPT = "Summarise the benchmark results in one sentence."


#: per API: the raw client's path and body, and the bytes of the first token in the answer
RAW = {
    "ollama": (
        "/api/generate",
        {"model": MODEL, "prompt": PROMPT, "stream": True, "keep_alive": -1},
        (b'"response": "tok0', b'"response":"tok0'),
    ),
    "openai": (
        "/v1/chat/completions",
        {"model": MODEL, "messages": [{"role": "user", "content": PROMPT}], "stream": True},
        (b'"content": "tok0', b'"content":"tok0'),
    ),
}


#: the raw client's keep-alive connection per port (opened by its first call, like ours)
_RAW_SOCKETS: dict[int, socket.socket] = {}


def raw_ttft_ms(port: int, num_predict: int, api: str = "ollama") -> float:
    """Minimal client: pre-built request, one sendall on a kept-alive connection, recv until
    the first token. (A fresh connection per call would time the server's accept too.)"""
    path, payload, first = RAW[api]
    limit = (
        {"max_tokens": num_predict}
        if api == "openai"
        else {"options": {"num_predict": num_predict}}
    )
    body = json.dumps({**payload, **limit}).encode()
    request = (
        f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    ).encode() + body
    sock = _RAW_SOCKETS.get(port)
    if sock is None:
        sock = _RAW_SOCKETS[port] = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    t0 = time.perf_counter_ns()
    sock.sendall(request)
    buf = b""
    while not any(marker in buf for marker in first):
        data = sock.recv(65536)
        if not data:
            raise RuntimeError(f"raw client: connection closed: {buf[-300:]!r}")
        buf += data
    t1 = time.perf_counter_ns()
    while not buf.endswith(b"0\r\n\r\n"):  # the whole answer, so the next call starts clean
        data = sock.recv(65536)
        if not data:
            raise RuntimeError(f"raw client: connection closed mid-answer: {buf[-300:]!r}")
        buf += data
    return (t1 - t0) / 1e6


def _client_path(url: str, port: int, p: dict[str, Any]) -> dict[str, list[float]]:
    from mabench.config import ServerSpec
    from mabench.measure.apis import sync_client as make_sync_client
    from mabench.measure.client import Timeouts

    api = p.get("api", "ollama")
    endpoint = "chat" if api == "openai" else "generate"
    with_peers = bool(p.get("peers"))
    kinds = ["async", "sync", "raw"] + (list(peers.PEERS) if with_peers else [])
    errors: dict[str, list[float]] = {k: [] for k in kinds}
    opts = {"num_predict": p["num_predict"]}
    server = ServerSpec("s", url=url, api=api)
    with asyncio.Runner() as runner, make_sync_client(server, url, Timeouts()) as sync_client:
        async_client = runner.run(_make(_async_client, server))
        others = peers.SequentialPeers(runner, url) if with_peers else None
        request = peers.Request(endpoint, MODEL, PROMPT, None, opts)
        if others is not None:
            peers.check_same_request(request, url)
        sync_client.load(MODEL)

        def one(kind: str) -> float:
            if kind == "raw":
                return raw_ttft_ms(port, p["num_predict"], api)
            if others is not None and kind in peers.PEERS:
                ttft = others.call(kind, request).ttft_ms
                if ttft is None:
                    raise RuntimeError(f"{kind}: no text from {url}")
                return ttft
            if kind == "async":
                r = runner.run(async_client.call(endpoint, MODEL, PROMPT, options=opts))
            else:
                r = sync_client.call(endpoint, MODEL, PROMPT, options=opts)
            return (r.t_first_token_ns - r.t_sent_ns) / 1e6

        for k in kinds:  # warm-up, unrecorded
            one(k)
        for i in range(p["calls"]):
            j = i % len(kinds)
            for kind in kinds[j:] + kinds[:j]:
                errors[kind].append(one(kind) - p["ttft_ms"])
        runner.run(async_client.aclose())
        if others is not None:
            others.close()
    return errors


def _async_client(server):
    from mabench.measure.apis import async_client
    from mabench.measure.client import Timeouts

    return async_client(server, server.url, Timeouts())


async def _make(factory, server):
    return factory(server)


def _harness_path(url: str, p: dict[str, Any]) -> dict[str, dict[str, list[float]]]:
    """TTFT errors of calls made as execute_run makes them (one agent, two calls per phase)."""
    from mabench.config import study_from_dict
    from mabench.measure.agents import Clock, build_plans, warmup_plan
    from mabench.measure.client import Timeouts
    from mabench.measure.coordinators import open_coordinator

    out: dict[str, dict[str, list[float]]] = {}
    plans = {}
    for coord in ("asyncio", "threads"):
        study = study_from_dict(
            {
                "study": "bench-ttft",
                "runs": 1,
                "coordinator": coord,
                "backend": {"kind": "external"},
                "servers": [{"name": "s", "url": url, "api": p.get("api", "ollama")}],
                "workloads": {
                    "w": {
                        "calls": [
                            {"prompt": "collector_analyse.md.j2", "num_predict": p["num_predict"]},
                            {"prompt": "collector_report.md.j2", "num_predict": p["num_predict"]},
                        ]
                    }
                },
                "agents": [{"name": "agent", "workload": "w", "server": "s"}],
                "configs": [{"id": "c1", "scenario": "chimera_homo"}],
            }
        )
        plans[coord] = build_plans(study, study.config("c1"), {"s": url}, "corpus")
        out[coord] = {"first_call": [], "later_calls": []}
    for i in range(p["phases"]):
        for coord in ("asyncio", "threads") if i % 2 else ("threads", "asyncio"):
            with open_coordinator(coord, Timeouts()) as coordinator:
                warmup = [warmup_plan(x) for x in plans[coord]]
                coordinator.run_phase(warmup, "warmup", concurrent=False, clock=Clock())
                outcome = coordinator.run_phase(
                    plans[coord], "solo", concurrent=False, clock=Clock()
                )
            for c in outcome.calls:
                key = "first_call" if c.call_index == 0 else "later_calls"
                out[coord][key].append(c.client_ttft_ns / 1e6 - p["ttft_ms"])
    return out


def measure_server(kind: str, p: dict[str, Any]) -> dict[str, Any]:
    """Both paths against one ``kind`` server, through ``p["api"]``: the errors' summaries."""
    tag = f"{kind}, {p.get('api', 'ollama')}"
    with servers(kind, 1, p["ttft_ms"], p["token_ms"]) as fleet:
        url = fleet.urls[0]
        port = int(url.rsplit(":", 1)[1])
        log(f"ttft_accuracy [{tag}]: {p['calls']} calls per client")
        client = _client_path(url, port, p)
        log(f"ttft_accuracy [{tag}]: {p['phases']} phases per coordinator")
        harness = _harness_path(url, p)
    floor = summary(client["raw"])["median"]
    entry: dict[str, Any] = {
        "client": {k: summary(v) for k, v in client.items()},
        "harness": {
            coord: {
                "all_calls": summary(v["first_call"] + v["later_calls"]),
                "first_call_of_phase": summary(v["first_call"]),
                "later_calls": summary(v["later_calls"]),
            }
            for coord, v in harness.items()
        },
    }
    entry["client_minus_raw_floor_ms"] = {
        k: round(summary(v)["median"] - floor, 4) for k, v in client.items() if k != "raw"
    }
    for coord, client_kind in (("asyncio", "async"), ("threads", "sync")):
        h = entry["harness"][coord]["all_calls"]
        c = entry["client"][client_kind]
        log(
            f"ttft_accuracy [{tag}] {coord}: harness median {h['median']} ms p99 {h['p99']} "
            f"ms; client median {c['median']} ms; raw floor {floor} ms"
        )
    return entry


def _goals(res: Result, ideal: dict[str, Any], label: str) -> None:
    for coord, client_kind in (("asyncio", "async"), ("threads", "sync")):
        h = ideal["harness"][coord]["all_calls"]
        res.goal(
            f"median TTFT error, {coord} ({client_kind} client), as run records measure it{label}",
            h["median"],
            "<=",
            GOAL_MS,
            "ms",
            f"ideal server, {h['n']} calls; p99 {h['p99']} ms",
        )


def _peer_goal(res: Result, ideal: dict[str, Any]) -> None:
    """Ours (the better of the async and sync client) against the best peer, same server."""
    client = ideal["client"]
    best_ours = min(("async", "sync"), key=lambda k: client[k]["median"])
    best_peer = min(peers.PEERS, key=lambda k: client[k]["median"])
    o, t = client[best_ours], client[best_peer]
    res.goal(
        "median TTFT error, ours vs the best peer (sequential calls)",
        o["median"],
        "<=",
        t["median"],
        "ms",
        f"ours {best_ours} client, {o['n']} calls, p99 {o['p99']} ms; best peer {best_peer}, "
        f"p99 {t['p99']} ms; ideal server, calls rotated through all clients",
    )


def run(quick: bool = False) -> Result:
    p = dict(QUICK if quick else FULL)
    res = Result("ttft_accuracy", TITLE)
    res.details["parameters"] = p
    per_server = {
        "ideal": measure_server("ideal", {**p, "peers": True}),
        "sim": measure_server("sim", p),
    }
    res.details["servers"] = per_server
    _goals(res, per_server["ideal"], "")
    _peer_goal(res, per_server["ideal"])
    res.details["peers"] = {
        "clients": list(peers.PEERS),
        "client": {
            k: per_server["ideal"]["client"][k] for k in ("async", "sync", *peers.PEERS, "raw")
        },
    }
    openai = measure_server("ideal", {**p, "api": "openai"})
    res.details["openai"] = {"ideal": openai}
    _goals(res, openai, ", OpenAI API")
    res.notes.append(
        "Goal on the ideal server (exact known TTFT); the sim server's numbers include its own "
        "processing before its timer starts (see details.servers.sim and its raw floor)."
    )
    return res
