"""One baseline for every config (issue 24): a study with dedicated and shared configs, both
thread settings, through real Snakemake and real embedded servers.

- ``dual-auto``: two servers splitting the CPUs (``num_thread: auto``): the solo phase gives
  each agent part of the machine, so a sequential phase measures the baseline (each agent
  alone, its server reloaded with every CPU);
- ``shared``: one server with every CPU: the solo phase is the baseline;
- ``dual-all``: two servers, each agent's calls with every CPU (``num_thread`` option): the
  solo phase is the baseline, and the concurrent phase oversubscribes the machine.

Every config's true speedup is against the agents one after another with the whole machine;
its interference speedup (solo against concurrent on its own servers) stands beside it.
"""

from __future__ import annotations

import pandas as pd
import pytest
import yaml
from snake import snakemake

from mabench.measure.baseline import slower_alone
from mabench.measure.environment import available_cpus
from mabench.measure.records import read_record

pytestmark = pytest.mark.slow

CPUS = available_cpus()


#: a short prompt: what is measured here is which baseline each config gets, not the model
PROMPT = "List three colours."


def _study() -> dict:
    calls = [{"prompt": "short.md.j2", "num_predict": 6}]
    options = {"temperature": 1.0, "top_k": 40}
    return {
        "study": "baseline-test",
        "runs": 2,
        "backend": {"kind": "embedded", "num_thread": "auto"},
        "servers": [{"name": "a"}, {"name": "b"}],
        "workloads": {"w": {"calls": calls}},
        "agents": [
            {"name": "collector", "workload": "w", "server": "a"},
            {"name": "insight", "workload": "w", "server": "b"},
        ],
        "corpus": {"files": 1},
        "configs": [
            {"id": "dual-auto", "scenario": "chimera_homo", "options": {}},
            {
                "id": "shared",
                "scenario": "chimera_homo",
                "agents": [
                    {"name": "collector", "workload": "w", "server": "a"},
                    {"name": "insight", "workload": "w", "server": "a"},
                ],
            },
            {
                "id": "dual-all",
                "scenario": "chimera_homo",
                "options": {
                    "collector": {**options, "num_thread": CPUS},
                    "insight": {**options, "num_thread": CPUS},
                },
            },
        ],
    }


@pytest.fixture(scope="module")
def baseline_study(tmp_path_factory):
    if CPUS < 2:
        pytest.skip("splitting the machine between two servers needs at least 2 CPUs")
    workdir = tmp_path_factory.mktemp("baseline")
    config = workdir / "baseline.yaml"
    config.write_text(yaml.safe_dump(_study()))
    (workdir / "short.md.j2").write_text(PROMPT)
    snakemake(workdir, configfile=config, check=True)
    return workdir / "results" / "baseline-test"


def _records(out, config_id):
    return [read_record(out / "runs" / config_id / f"run_{r}.json") for r in (1, 2)]


def test_a_config_that_splits_the_machine_measures_a_sequential_baseline(baseline_study):
    first, second = _records(baseline_study, "dual-auto")
    # balanced order: the first config starts forward, the next run reverses it
    assert first.protocol.phase_order == ["sequential", "solo", "concurrent"]
    assert second.protocol.phase_order == ["concurrent", "solo", "sequential"]
    for record in (first, second):
        baseline, m = record.protocol.baseline, record.metrics
        assert baseline.kind == "sequential" and baseline.threads == CPUS
        assert all(s.threads < CPUS for s in record.topology.servers)  # the split
        # the sequential block loaded each agent with every CPU, the other block did not
        by_block = {tuple(load.phases): load for load in record.loads if load.agent == "insight"}
        assert by_block[("sequential",)].options["num_thread"] == CPUS
        assert "num_thread" not in next(b for k, b in by_block.items() if "solo" in k).options
        # what each number is: the baseline's walls summed, over the concurrent wall
        walls = {a.agent: a.sequential_wall_s for a in m.agents}
        assert m.sequential_sum_s == pytest.approx(sum(walls.values()))
        assert m.true_speedup == pytest.approx(m.sequential_sum_s / m.concurrent_wall_s)
        assert m.true_efficiency == pytest.approx(100 * m.true_speedup / 2)
        assert m.interference_speedup == pytest.approx(m.solo_sum_s / m.concurrent_wall_s)
        for a in m.agents:
            assert a.sequential_slowdown == pytest.approx(a.concurrent_wall_s / a.sequential_wall_s)
        # the same work alone with every CPU as together (same seed): proved, not assumed
        assert record.validity.sequential_work.matched
        # a baseline the machine did not give (slower with every CPU than with half of it,
        # as beside other work) is flagged and left out of the headline, never counted
        slower = slower_alone(m.agents)
        assert record.validity.flags == (["baseline_slower"] if slower else [])


@pytest.mark.parametrize("config_id", ["shared", "dual-all"])
def test_a_config_whose_servers_have_the_whole_machine_uses_its_solo_phase(
    baseline_study, config_id
):
    for record in _records(baseline_study, config_id):
        assert record.protocol.baseline.kind == "solo"
        assert "sequential" not in record.protocol.phase_order
        m = record.metrics
        assert m.sequential_sum_s is None
        assert m.true_speedup == pytest.approx(m.interference_speedup)


def test_every_config_ranks_on_one_axis_in_the_tables_and_the_report(baseline_study):
    runs = pd.read_parquet(baseline_study / "tables" / "runs.parquet")
    baselines = runs.groupby("config_id")["baseline"].unique().map(list).to_dict()
    assert baselines == {"dual-auto": ["sequential"], "shared": ["solo"], "dual-all": ["solo"]}
    assert runs["true_efficiency"].notna().all() and runs["interference_efficiency"].notna().all()
    report = (baseline_study / "technical_report.md").read_text()
    summary = report.split("## Executive summary", 1)[1].split("\n## ", 1)[0]
    assert "**Against the agents run one after another, each with the whole machine" in summary
    assert "Interference, each agent alone on its config's own servers" in summary
    assert "a sequential phase measured the baseline" in summary
    assert "| Baseline |" in report and "| sequential |" in report
