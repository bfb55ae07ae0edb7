"""What each config's speedup is measured against (mabench.measure.baseline), and the check
that a sequential baseline really had the machine."""

from __future__ import annotations

import pytest

from mabench.config import ConfigError, study_from_dict
from mabench.measure.agents import build_plans
from mabench.measure.baseline import (
    BASELINE_SLOWER,
    choose_baseline,
    slower_alone,
    whole_machine_plans,
    with_baseline_check,
)
from mabench.measure.protocol import phase_blocks
from mabench.measure.records import AgentMetrics, RunMetrics, Validity, WorkCheck

DUAL = [
    {"name": "collector", "workload": "w", "server": "a"},
    {"name": "insight", "workload": "w", "server": "b"},
]
SHARED = [
    {"name": "collector", "workload": "w", "server": "a"},
    {"name": "insight", "workload": "w", "server": "a"},
]


def _study(backend: dict, servers=None, only=None, **extra):
    return study_from_dict(
        {
            "study": "t",
            "backend": backend,
            "servers": servers or [{"name": "a"}, {"name": "b"}],
            "workloads": {
                "w": {"calls": [{"prompt": "collector_analyse.md.j2", "num_predict": 4}]}
            },
            "agents": DUAL,
            "configs": [
                c
                for c in [
                    {"id": "dual", "scenario": "chimera_homo"},
                    {"id": "shared", "scenario": "chimera_homo", "agents": SHARED},
                    {
                        "id": "dual-all",
                        "scenario": "chimera_homo",
                        "options": {"collector": {"num_thread": 4}, "insight": {"num_thread": 4}},
                    },
                ]
                if only is None or c["id"] == only
            ],
            **extra,
        }
    )


def test_auto_measures_a_sequential_phase_only_where_a_config_splits_the_machine():
    study = _study({"kind": "embedded"})
    split = choose_baseline(study, study.config("dual"), {"a": 2, "b": 2}, cpus=4)
    assert (split.kind, split.threads) == ("sequential", 4)
    assert "'a', 'b' have fewer threads than the machine's 4 CPUs" in split.reason
    whole = choose_baseline(study, study.config("shared"), {"a": 4}, cpus=4)
    assert (whole.kind, whole.threads) == ("solo", None)
    # agents that ask for every CPU themselves (num_thread) have the whole machine alone
    assert choose_baseline(study, study.config("dual-all"), {"a": 2, "b": 2}, 4).kind == "solo"


def test_auto_on_servers_the_harness_cannot_see_into():
    ollama = _study({"kind": "ollama"})
    assert choose_baseline(ollama, ollama.config("dual"), {}, cpus=4).kind == "solo"
    external = _study(
        {"kind": "external"},
        servers=[{"name": "a", "url": "http://h1:1"}, {"name": "b", "url": "http://h2:1"}],
    )
    none = choose_baseline(external, external.config("dual"), {}, cpus=4)
    assert none.kind is None and "declare baseline: solo" in none.reason
    declared = _study(
        {"kind": "external"},
        servers=[{"name": "a", "url": "http://h1:1"}, {"name": "b", "url": "http://h2:1"}],
        baseline="solo",
    )
    assert choose_baseline(declared, declared.config("dual"), {}, cpus=4).kind == "solo"


def test_agents_on_the_openai_api_cannot_ask_for_more_threads():
    servers = [{"name": "a", "api": "openai"}, {"name": "b"}]
    study = _study({"kind": "embedded"}, servers=servers, only="dual")
    baseline = choose_baseline(study, study.config("dual"), {"a": 2, "b": 2}, cpus=4)
    assert baseline.kind is None and "'collector' use the OpenAI API" in baseline.reason


def test_the_sequential_plans_do_the_same_work_with_every_cpu():
    study = _study({"kind": "embedded"}, baseline="sequential")
    config = study.config("dual")
    baseline = choose_baseline(study, config, {"a": 2, "b": 2}, cpus=4)
    plans = build_plans(study, config, {"a": "http://a", "b": "http://b"}, "corpus")
    whole = whole_machine_plans(plans, baseline)
    for plan, seq in zip(plans, whole, strict=True):
        assert seq.info.options == {**plan.info.options, "num_thread": 4}
        assert seq.calls == plan.calls and seq.url == plan.url
    blocks = phase_blocks(["sequential", "solo", "concurrent"], plans, baseline)
    assert [(b.phases, b.plans[0].info.options.get("num_thread")) for b in blocks] == [
        (("sequential",), 4),
        (("solo", "concurrent"), None),
    ]
    reversed_blocks = phase_blocks(["concurrent", "solo", "sequential"], plans, baseline)
    assert [b.phases for b in reversed_blocks] == [("concurrent", "solo"), ("sequential",)]


def _agent(name: str, solo: float, sequential: float | None) -> AgentMetrics:
    return AgentMetrics(
        agent=name,
        server="a",
        solo_wall_s=solo,
        concurrent_wall_s=solo,
        slowdown=1.0,
        solo_tps=None,
        concurrent_tps=None,
        solo_client_tps=None,
        concurrent_client_tps=None,
        solo_ttft_ms=None,
        concurrent_ttft_ms=None,
        sequential_wall_s=sequential,
    )


@pytest.mark.parametrize(
    ("sequential", "flagged"),
    [(0.6, False), (1.0, False), (1.25, False), (1.3, True), (None, False)],
)
def test_an_agent_slower_with_every_cpu_than_with_its_share_flags_the_run(sequential, flagged):
    agents = [_agent("collector", 1.0, sequential), _agent("insight", 1.0, 0.5)]
    assert slower_alone(agents) == (["collector"] if flagged else [])

    metrics = RunMetrics(
        n_agents=2,
        concurrent_wall_s=1.0,
        concurrent_sum_s=2.0,
        solo_sum_s=2.0,
        seed_speedup=2.0,
        seed_efficiency=100.0,
        true_speedup=None,
        true_efficiency=None,
        coordination_overhead_ms=0.0,
        throughput_delta=None,
        ttft_delta_ms=None,
        contention_legacy=False,
        contention_ttft=None,
        contention_throughput=None,
        agents=agents,
    )
    validity = Validity(
        work=WorkCheck(matched=True, calls=[], first_divergence={}), flags=[], isolation_after=None
    )
    checked = with_baseline_check(validity, metrics)
    assert checked.flags == ([BASELINE_SLOWER] if flagged else [])


def test_a_sequential_baseline_on_the_openai_api_is_refused_before_any_work():
    servers = [
        {"name": "a", "api": "openai", "url": "http://h1:1"},
        {"name": "b", "url": "http://h2:1"},
    ]
    with pytest.raises(
        ConfigError, match=r"baseline: sequential .* agent 'collector' .* server 'a'"
    ):
        _study({"kind": "external"}, servers=servers, only="dual", baseline="sequential")
