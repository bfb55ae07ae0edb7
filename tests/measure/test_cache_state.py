"""The same prompt-cache state in every measured phase, against simulated servers that cache
prompt prefixes (``--prefix-cache``: a repeated prefix skips its share of the TTFT and is
reported as cached, like vLLM's automatic prefix caching).

Without a reset the second phase reuses the first one's prompts: its calls skip most of the
TTFT, true efficiency leaves its physical range, and the run is flagged. With the server's
reset, a per-phase salt or a reload, every phase finds the same cache state and true
efficiency is what two parallel servers give (~100 %).

Timing: TTFT 400 ms, 4 tokens of 10 ms, two calls per agent: a call takes ~0.43 s, ~0.02 s
when its prompt is cached.
"""

from __future__ import annotations

import pytest

from mabench.config import ServerSpec, study_from_dict
from mabench.measure.apis import management_client
from mabench.measure.cache_state import SALT_HEX_DIGITS, new_salt, resolve_policy
from mabench.measure.client import Timeouts
from mabench.measure.errors import ServerSetupError
from mabench.measure.protocol import execute_run
from mabench.measure.records import CONCURRENT, SOLO, RunRecord, validate_record
from mabench.measure.validity import CACHE_DIFFER, CACHE_UNKNOWN
from mabench.servers.embedded.registry import BUILTIN_MODEL, embedded_model_path
from mabench.servers.llama_server import find_binary
from mabench.servers.net import free_port
from mabench.servers.process import start_logged, stop, wait_answering

SIM = {"prefix_cache": True, "ttft_ms": 400, "token_ms": 10}
AGENTS = (("collector", "a"), ("insight", "b"))


def _study(servers: list[dict]) -> object:
    calls = [
        {"prompt": "collector_analyse.md.j2", "num_predict": 4},
        {"prompt": "collector_report.md.j2", "num_predict": 4},
    ]
    return study_from_dict(
        {
            "study": "cache-state",
            "backend": {"kind": "external"},
            "on_work_mismatch": "flag",
            "servers": servers,
            "workloads": {"w": {"calls": calls}},
            "agents": [{"name": a, "workload": "w", "server": s} for a, s in AGENTS],
            "configs": [{"id": "c1", "scenario": "chimera_homo"}],
        }
    )


def _run(sim_server, sim: dict, api: str = "openai", **server) -> RunRecord:
    """Run 1 (solo phase first) of two agents, each on a server of its own."""
    a, b = sim_server(**sim), sim_server(**sim)
    servers = [{"name": n, "url": s.url, "api": api, **server} for n, s in (("a", a), ("b", b))]
    record = execute_run(_study(servers), "c1", 1, {"a": a.url, "b": b.url})
    validate_record(record.to_json())
    return record


def _efficiency(record: RunRecord) -> float:
    """100 x the agents' solo wall times summed / the concurrent phase's wall time / agents:
    the solo phase against the concurrent one on the same servers (at most ~100 % for agents
    on parallel servers of their own: the concurrent phase lasts at least as long as the
    longest agent alone, which is at least their mean)."""
    solo = sum(s.t_end_ns - s.t_start_ns for s in record.agent_spans if s.phase == SOLO)
    (concurrent,) = [p.t_end_ns - p.t_start_ns for p in record.phases if p.phase == CONCURRENT]
    return 100 * solo / concurrent / len(AGENTS)


def _cached(record: RunRecord, phase: str) -> list[int | None]:
    return [c.server_metrics.cached_prompt_tokens for c in record.calls if c.phase == phase]


def test_without_a_reset_the_second_phase_reuses_the_first_and_the_run_is_flagged(sim_server):
    record = _run(sim_server, SIM, cache_reset="none")
    assert [s.cache_reset for s in record.topology.servers] == ["none", "none"]
    solo, concurrent = _cached(record, SOLO), _cached(record, CONCURRENT)
    assert all(n > 0 for n in concurrent) and concurrent != solo
    assert record.validity.cache.status == "differ"
    assert record.validity.cache.first_difference == {"collector": 0, "insight": 0}
    assert CACHE_DIFFER in record.validity.flags
    # the concurrent phase skipped its prefills: an efficiency no two servers can reach
    assert _efficiency(record) > 150


@pytest.mark.parametrize(
    ("declared", "resolved"),
    [("auto", "endpoint"), ("endpoint", "endpoint"), ("salt", "salt")],
)
def test_a_reset_or_a_salt_gives_every_phase_the_same_cache_state(sim_server, declared, resolved):
    record = _run(sim_server, SIM, cache_reset=declared)
    assert [s.cache_reset for s in record.topology.servers] == [resolved, resolved]
    if resolved == "endpoint":
        assert record.topology.servers[0].cache_reset_how == (
            "vLLM's prefix-cache reset (POST /reset_prefix_cache)"
        )
    assert _cached(record, SOLO) == _cached(record, CONCURRENT)
    assert record.validity.cache.status == "equal"
    assert record.validity.flags == []
    # two agents, each on a parallel server of its own: at most 100 % (timing noise aside)
    assert _efficiency(record) == pytest.approx(100.0, abs=6.0)
    salts = {c.prompt_salt for c in record.calls}
    if resolved == "salt":
        # a new salt per phase and agent, the same length each, the texts not compared
        assert len(salts) == 4 and {len(s) for s in salts} == {SALT_HEX_DIGITS + 3}
        assert not any(w.compared_text for w in record.validity.work.calls)
        assert record.validity.work.matched
    else:
        assert salts == {None}


def test_ollamas_api_is_reloaded_before_each_phase(sim_server):
    record = _run(sim_server, SIM, api="ollama")
    assert [s.cache_reset for s in record.topology.servers] == ["reload", "reload"]
    evaluated = {
        phase: [c.server_metrics.prompt_eval_count for c in record.calls if c.phase == phase]
        for phase in (SOLO, CONCURRENT)
    }
    assert evaluated[SOLO] == evaluated[CONCURRENT]
    assert record.validity.cache.status == "equal" and record.validity.flags == []
    assert _efficiency(record) == pytest.approx(100.0, abs=6.0)


def test_a_server_that_says_nothing_and_is_not_reset_leaves_the_cache_state_unknown(sim_server):
    sim = {"ttft_ms": 400, "token_ms": 10, "shape": "openai-no-usage"}
    record = _run(sim_server, sim, cache_reset="none")
    assert record.validity.cache.status == "unknown"
    assert CACHE_UNKNOWN in record.validity.flags
    # the same server salted: nothing reported, but no phase can reuse another's prompts
    salted = _run(sim_server, sim)
    assert [s.cache_reset for s in salted.topology.servers] == ["salt", "salt"]
    assert salted.validity.cache.status == "reset" and salted.validity.flags == []


def test_the_embedded_server_needs_no_reset_and_a_declared_impossible_one_is_refused(sim_server):
    srv = sim_server()
    timeouts = Timeouts()
    with management_client(ServerSpec("a"), srv.url, timeouts, "embedded") as client:
        policy = resolve_policy(ServerSpec("a"), client, "embedded")
    assert (policy.kind, policy.per_request, policy.assured) == ("none", True, True)
    assert "clears its KV cache" in policy.how
    spec = ServerSpec("a", url=srv.url, api="openai", cache_reset="reload")
    with management_client(spec, srv.url, timeouts, "external") as client:
        with pytest.raises(ServerSetupError, match="cache_reset: reload needs Ollama's API"):
            resolve_policy(spec, client, "external")
        endpoint = ServerSpec("a", url=srv.url, api="openai", cache_reset="endpoint")
        with pytest.raises(ServerSetupError, match="answers none of GET /slots"):
            resolve_policy(endpoint, client, "external")


def test_salts_are_new_each_time_and_of_one_length():
    salts = {new_salt() for _ in range(100)}
    assert len(salts) == 100 and {len(s) for s in salts} == {SALT_HEX_DIGITS + 3}


@pytest.mark.parametrize("save_path", [False, True])
def test_a_real_llama_server_is_reset_by_erasing_its_slots_only_where_it_can(tmp_path, save_path):
    """llama.cpp's server lists its slots at its defaults, but refuses every slot action (501)
    unless started with --slot-save-path: auto then salts the prompts instead of failing the
    run at its first reset; with a save path, every slot is erased, and a prompt sent again
    after the erase is not taken from the cache."""
    binary = find_binary("llama-server", tmp_path)
    if binary is None:
        pytest.skip("no llama-server: `make setup` builds it (envs/build-llama-server.sh)")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    extra = ("--slot-save-path", str(tmp_path)) if save_path else ()
    command = [
        str(binary),
        *("--model", str(embedded_model_path()), "--alias", BUILTIN_MODEL),
        *("--port", str(port), "--parallel", "2", "--threads", "1", *extra),
    ]
    proc = start_logged(command, tmp_path / "server.log")
    try:
        wait_answering(proc, url, command=command, log_path=None, timeout_s=120, path="/health")
        spec = ServerSpec("ls", url=url, api="openai")
        with management_client(spec, url, Timeouts(), "external") as client:
            prompt = "Tell me a long story about a cat, a dog and all of their friends."
            for _ in range(2):  # the second time, the prompt is in the slot's cache
                again = client.call("chat", BUILTIN_MODEL, prompt, options={"num_predict": 2})
            assert again.metrics.cached_prompt_tokens
            policy = resolve_policy(spec, client, "external")
            if not save_path:
                assert policy.kind == "salt" and "no reset found" in policy.how
                return
            assert policy.kind == "endpoint" and "every slot erased (2)" in policy.how
            assert all(client.reset_cache(path) for path in policy.resets)
            fresh = client.call("chat", BUILTIN_MODEL, prompt, options={"num_predict": 2})
            assert fresh.metrics.cached_prompt_tokens == 0
    finally:
        stop(proc)
