"""llama.cpp's own server as a backend the pipeline starts (``backend.kind: llama_server``):
the real ``llama-server`` that ``make setup`` builds, through the whole workflow.

Two topologies, as the scaling study has them: one server with two slots that batches both
agents, and two dedicated servers that split the machine. The first has the whole machine, so
its solo phase is the baseline; the second gets its sequential baseline by restarting each
server with every CPU (llama-server takes its threads when it starts), on the same port.
Before each measured phase every slot is erased (``/slots``), and each call's server clock is
llama.cpp's own ``timings``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from snake import snakemake

from mabench.measure.environment import available_cpus
from mabench.measure.records import read_record
from mabench.servers.llama_server import find_binary
from mabench.servers.net import status_of

pytestmark = pytest.mark.skipif(
    find_binary("llama-server", Path.cwd()) is None,
    reason="no llama-server: `make setup` builds it (envs/build-llama-server.sh)",
)


def _study() -> dict:
    calls = [
        {"prompt": "collector_analyse.md.j2", "num_predict": 8},
        {"prompt": "collector_report.md.j2", "num_predict": 8},
    ]
    return {
        "study": "llama-server",
        "runs": 2,
        "backend": {"kind": "llama_server", "ctx_size": 1024},
        "servers": [{"name": "slots", "parallel": 2}, {"name": "d1"}, {"name": "d2"}],
        "workloads": {"w": {"calls": calls}},
        "agents": [
            {"name": "collector", "workload": "w", "server": "d1"},
            {"name": "insight", "workload": "w", "server": "d2"},
        ],
        "corpus": {"files": 1},
        "configs": [
            {
                "id": "slots2",
                "scenario": "chimera_homo",
                "agents": [
                    {"name": "collector", "workload": "w", "server": "slots"},
                    {"name": "insight", "workload": "w", "server": "slots"},
                ],
            },
            {"id": "dedicated", "scenario": "chimera_homo"},
        ],
    }


@pytest.mark.slow
def test_a_study_on_llama_server_with_slots_and_dedicated_servers(tmp_path: Path) -> None:
    config = tmp_path / "llama-server.yaml"
    config.write_text(yaml.safe_dump(_study()))
    snakemake(tmp_path, configfile=config, check=True)
    out = tmp_path / "results" / "llama-server"
    cpus = available_cpus()
    urls = set()
    for run in (1, 2):
        shared = read_record(out / "runs" / "slots2" / f"run_{run}.json")
        (server,) = shared.topology.servers
        assert (server.backend, server.api, server.threads) == ("llama_server", "openai", cpus)
        assert server.settings == {"parallel": "2", "ctx_size": "1024"}
        assert server.settings_source == "set"
        assert server.cache_reset == "endpoint"
        assert "every slot erased (2)" in (server.cache_reset_how or "")
        # one server with the whole machine: the solo phase is the baseline
        assert shared.protocol.baseline.kind == "solo"
        assert shared.validity.flags == [], shared.validity
        assert shared.validity.work.matched
        # llama.cpp's server is not batch-invariant: the same work is the same token counts
        assert not any(c.compared_text for c in shared.validity.work.calls)
        for call in shared.calls:
            m = call.server_metrics
            # llama.cpp's own clock, and its token counts
            assert m.prompt_eval_duration_ns is not None and m.eval_duration_ns is not None
            assert 0 < m.eval_count <= 8 and m.prompt_eval_count
        split = read_record(out / "runs" / "dedicated" / f"run_{run}.json")
        assert [s.settings["parallel"] for s in split.topology.servers] == ["1", "1"]
        if cpus >= 2:  # two servers split the machine: each agent alone with every CPU
            assert split.protocol.baseline.kind == "sequential"
            assert split.protocol.baseline.threads == cpus
            assert "restarted with all" in split.protocol.baseline.reason
            assert [s.threads for s in split.topology.servers] == [cpus // 2] * 2
            assert split.validity.sequential_work is not None
            assert split.validity.sequential_work.matched
            phases = {p.phase for p in split.phases}
            assert phases == {"sequential", "solo", "concurrent"}
            assert split.metrics.true_speedup is not None
        urls |= {s.url for s in shared.topology.servers + split.topology.servers}
    # the restarts kept each server's port; every server is gone after the study
    assert len(urls) == 3
    assert all(status_of(url, "/health", timeout_s=1.0) is None for url in urls)
    report = (out / "technical_report.md").read_text()
    assert "parallel=2" in report and "llama-server" in report
