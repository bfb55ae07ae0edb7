"""The run protocol through the OpenAI API, against simulated servers whose timing is known.

The expectations are those of test_protocol.py (c = ttft + (num_predict - 1) * token per call,
two calls per agent): two agents on two parallel servers reach ~100 % true efficiency, two on
one serialized (FIFO) server 50 % true and 87.5 % seed efficiency. What differs is what the
API can say: no unload (recorded as unavailable, never pretended), no load time, counts from
usage or counted deltas with their source, server durations only from llama.cpp timings.
"""

from __future__ import annotations

import json

import pytest

from mabench.config import study_from_dict
from mabench.measure.protocol import execute_run
from mabench.measure.records import validate_record


def _study(servers: list[dict], agents: list[tuple[str, str]], coordinator="asyncio", n=40):
    calls = [
        {"prompt": "collector_analyse.md.j2", "num_predict": n},
        {"prompt": "collector_report.md.j2", "num_predict": n},
    ]
    return study_from_dict(
        {
            "study": "protocol-openai",
            "coordinator": coordinator,
            "backend": {"kind": "external"},
            "servers": servers,
            "workloads": {"w": {"calls": calls}},
            "agents": [{"name": a, "workload": "w", "server": s} for a, s in agents],
            "baseline": "solo",  # each simulated server's timing is its own: solo = sequential
            "configs": [
                {
                    "id": "c1",
                    "scenario": "chimera_homo",
                    "options": {a: {"temperature": 0.7} for a, _ in agents},
                }
            ],
        }
    )


def _openai(name: str, url: str, **extra) -> dict:
    return {"name": name, "url": url, "api": "openai", **extra}


@pytest.mark.parametrize("coordinator", ["asyncio", "threads"])
def test_two_parallel_openai_servers_reach_full_true_efficiency(sim_server, coordinator):
    # c = 150 + 39 * 15 = 735 ms; bounds as in test_protocol.py (what the metric means)
    a, b = sim_server(ttft_ms=150, token_ms=15), sim_server(ttft_ms=150, token_ms=15)
    servers = [_openai("a", a.url), _openai("b", b.url)]
    study = _study(servers, [("collector", "a"), ("insight", "b")], coordinator)
    record = execute_run(study, "c1", 1, {"a": a.url, "b": b.url})
    validate_record(record.to_json())
    m = record.metrics
    assert m.true_efficiency == pytest.approx(100.0, abs=4.0), m
    assert m.seed_efficiency >= 96.0
    for agent in m.agents:
        assert agent.slowdown == pytest.approx(1.0, abs=0.04)
        assert agent.solo_tps is None  # the API gives no eval duration
        assert agent.solo_ttft_ms == pytest.approx(150, abs=60)
    assert [s.api for s in record.topology.servers] == ["openai", "openai"]
    assert record.topology.servers[0].version is None
    assert record.isolation.unavailable == ["a", "b"]
    assert record.isolation.loaded_before == {} and record.isolation.verified
    assert all(load.load_duration_ns is None and load.wall_ns > 0 for load in record.loads)
    for call in record.calls:
        sm = call.server_metrics
        assert (sm.eval_count, sm.eval_count_source, sm.prompt_eval_count_source) == (
            40,
            "usage",
            "usage",
        )
        assert sm.total_duration_ns is None and sm.load_duration_ns is None
        assert sm.eval_duration_ns is None and sm.prompt_eval_duration_ns is None
        assert call.options == {"temperature": 0.7, "seed": 42, "num_predict": 40}
        assert len(call.token_arrivals_us) == 40  # one arrival per content delta
        assert call.token_arrivals_us[0] == pytest.approx(150_000, abs=60_000)  # the TTFT, µs
        assert call.done_reason == "length"


@pytest.mark.parametrize("coordinator", ["asyncio", "threads"])
def test_one_serialized_openai_server_halves_true_efficiency(sim_server, coordinator):
    s = sim_server(ttft_ms=100, token_ms=10, mode="serialized", usage="never")
    study = _study([_openai("s", s.url)], [("collector", "s"), ("insight", "s")], coordinator)
    record = execute_run(study, "c1", 1, {"s": s.url})
    m = record.metrics
    assert m.true_efficiency == pytest.approx(50.0, abs=2.0)
    assert m.seed_efficiency == pytest.approx(87.5, abs=2.0)
    counts = {
        (c.server_metrics.eval_count, c.server_metrics.eval_count_source) for c in record.calls
    }
    assert counts == {(40, "stream")}  # no usage: the client counted the deltas
    assert all(c.server_metrics.prompt_eval_count is None for c in record.calls)


def test_timings_give_server_throughput_and_an_ollama_server_beside_keeps_its_unload(
    sim_server,
):
    o, t = (
        sim_server(ttft_ms=100, token_ms=10),
        sim_server(ttft_ms=100, token_ms=10, usage="never", timings=True),
    )
    servers = [{"name": "o", "url": o.url}, _openai("t", t.url)]
    study = _study(servers, [("collector", "o"), ("insight", "t")], n=20)
    record = execute_run(study, "c1", 2, {"o": o.url, "t": t.url})
    assert [s.api for s in record.topology.servers] == ["ollama", "openai"]
    assert record.isolation.unavailable == ["t"]
    assert set(record.isolation.loaded_before) == {"o"}
    by_agent = {a.agent: a for a in record.metrics.agents}
    assert by_agent["insight"].solo_tps == pytest.approx(100.0, rel=0.01)  # 20 / 0.2 s
    insight = [c for c in record.calls if c.agent == "insight"]
    assert {c.server_metrics.eval_count_source for c in insight} == {"timings"}
    assert {c.server_metrics.eval_duration_ns for c in insight} == {200_000_000}
    collector = [c for c in record.calls if c.agent == "collector"]
    assert {c.server_metrics.eval_count_source for c in collector} == {"final_metrics"}


def test_the_api_key_reaches_the_server_and_nothing_else(sim_server, monkeypatch):
    monkeypatch.setenv("SIM_KEY", "sk-never-written-7")
    monkeypatch.setenv("RUN_KEY", "sk-never-written-7")
    s = sim_server(api_key_env="SIM_KEY")
    study = _study([_openai("s", s.url, api_key_env="RUN_KEY")], [("solo", "s")], n=4)
    record = execute_run(study, "c1", 1, {"s": s.url})
    text = json.dumps(record.to_json())
    assert "sk-never-written-7" not in text and "RUN_KEY" not in text
    assert record.metrics.true_efficiency is not None


def test_a_started_server_is_unloaded_and_loaded_through_ollamas_api(sim_server):
    # servers the pipeline starts (embedded, ollama) speak Ollama's API beside /v1: the steps
    # before the measurement use it, the measured calls the OpenAI API
    s = sim_server(ttft_ms=50, token_ms=5)
    study = _study([_openai("s", s.url)], [("collector", "s")], n=4)
    record = execute_run(study, "c1", 1, {"s": s.url}, backend="ollama")
    assert record.isolation.unavailable == [] and record.isolation.verified
    assert record.isolation.loaded_after == {"s": []}
    assert record.loads[0].load_duration_ns > 0  # the sim server's load, reported natively
    assert record.topology.servers[0].api == "openai"
    assert record.topology.servers[0].version == "sim-parallel"
    assert {c.server_metrics.eval_count_source for c in record.calls} == {"usage"}
