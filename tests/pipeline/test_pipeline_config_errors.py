"""Malformed study configs are rejected by Snakemake before any job runs, naming the key."""

from __future__ import annotations

import copy

import pytest
import yaml
from snake import snakemake

pytestmark = pytest.mark.slow

VALID = {
    "study": "bad",
    "runs": 2,
    "backend": {"kind": "external"},
    "servers": [
        {"name": "a", "url": "http://127.0.0.1:9"},
        {"name": "b", "url": "http://127.0.0.1:10"},
    ],
    "configs": [{"id": "c1", "scenario": "chimera_homo", "options": {"insight": {"num_ctx": 512}}}],
}


def _set(path: str, value):
    def change(cfg):
        *parents, last = path.split(".")
        node = cfg
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return change


def _both(*changes):
    def change(cfg):
        for c in changes:
            c(cfg)

    return change


EMBEDDED = _set("backend", {"kind": "embedded"})

CASES = [
    ("zero runs", _set("runs", 0), "runs"),
    ("negative runs", _set("runs", -3), "runs"),
    ("runs as text", _set("runs", "five"), "runs"),
    ("study name", _set("study", "My Study"), "study"),
    ("empty model", _set("model", ""), "model"),
    ("unknown coordinator", _set("coordinator", "trio"), "coordinator"),
    ("unknown backend", _set("backend", {"kind": "vllm"}), "backend.kind"),
    ("unknown top-level key", _set("n_runs", 3), "n_runs"),
    ("unknown scenario", _set("configs.0.scenario", "chimera_typo"), "configs[0].scenario"),
    (
        "duplicate config id",
        _set("configs", [{"id": "c1", "scenario": "chimera_homo"}] * 2),
        "configs[1].id",
    ),
    ("no configs", _set("configs", []), "configs"),
    (
        "unknown option key",
        _set("configs.0.options", {"insight": {"temprature": 0.7}}),
        "temprature",
    ),
    ("mistyped option", _set("configs.0.options", {"insight": {"num_ctx": "big"}}), "num_ctx"),
    (
        "options of a missing agent",
        _set("configs.0.options", {"critic": {}}),
        "configs[0].options.critic",
    ),
    (
        "num_predict per agent",
        _set("configs.0.options", {"insight": {"num_predict": 9}}),
        "num_predict",
    ),
    ("bad URL", _set("servers.0.url", "ftp://example"), "servers[0].url"),
    ("external without URL", _set("servers.1", {"name": "b"}), "servers[1].url"),
    (
        "port out of range",
        _both(EMBEDDED, _set("servers", [{"name": "a", "port": 70000}, {"name": "b"}])),
        "servers[0].port",
    ),
    (
        "port zero",
        _both(EMBEDDED, _set("servers", [{"name": "a", "port": 0}, {"name": "b"}])),
        "servers[0].port",
    ),
    (
        "duplicate ports",
        _both(
            EMBEDDED, _set("servers", [{"name": "a", "port": 12000}, {"name": "b", "port": 12000}])
        ),
        "servers[1].port",
    ),
    ("URL for a started server", EMBEDDED, "servers[0].url"),
    ("duplicate server names", _set("servers.1.name", "a"), "servers[1].name"),
    (
        "agent on a missing server",
        _set("agents", [{"name": "collector", "workload": "collector", "server": "zzz"}]),
        "agents[0].server",
    ),
    (
        "agent with a missing workload",
        _set("agents", [{"name": "x", "workload": "nope", "server": "a"}]),
        "agents[0].workload",
    ),
    ("negative timeout", _set("timeouts", {"request_s": -1}), "timeouts.request_s"),
    (
        "throughput threshold above 100",
        _set("contention", {"throughput_pct": 150}),
        "contention.throughput_pct",
    ),
    ("unknown reference dataset", _set("report", {"reference": ["tr999"]}), "report.reference"),
    (
        "negative num_thread",
        _set("configs.0.options", {"insight": {"num_thread": -1}}),
        "configs[0].options.insight.num_thread",
    ),
    (
        "temperature below 0",
        _set("configs.0.options", {"collector": {"temperature": -0.5}}),
        "configs[0].options.collector.temperature",
    ),
    (
        "top_p above 1",
        _set("configs.0.options", {"insight": {"top_p": 1.2}}),
        "configs[0].options.insight.top_p",
    ),
    (
        "one server under two names (localhost and 127.0.0.1)",
        _set("servers.1.url", "http://localhost:9"),
        "servers[1].url: http://localhost:9 is the same server as 'a'",
    ),
    (
        "missing prompt file",
        _set("workloads", {"w": {"calls": [{"prompt": "nope.j2", "num_predict": 4}]}}),
        "workloads.w.calls[0].prompt",
    ),
]


@pytest.mark.parametrize(("change", "key"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_config_is_rejected_before_any_job(tmp_path, change, key):
    cfg = copy.deepcopy(VALID)
    change(cfg)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = snakemake(tmp_path, configfile=path, timeout=120)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert key in output, output[-2000:]
    assert "Nothing was run" in output or "invalid study config" in output
    assert not (tmp_path / "results").exists()
    assert "Select jobs to execute" not in output


def test_there_are_at_least_thirty_cases():
    assert len(CASES) >= 30
