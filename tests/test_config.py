"""Study configs: every shipped study loads; defaults fill in; mistakes name their key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mabench.api.ollama import Options
from mabench.config import ConfigError, config_schema, load_study, study_from_dict

ROOT = Path(__file__).resolve().parents[1]
TR110 = ROOT / "src" / "mabench" / "datasets" / "data" / "tr110"


def minimal(**extra):
    return {"study": "t", "configs": [{"id": "c1", "scenario": "chimera_homo"}], **extra}


@pytest.mark.parametrize(
    "path", [ROOT / "config.yaml", *sorted((ROOT / "workflow" / "studies").glob("*.yaml"))]
)
def test_shipped_studies_load(path):
    study = load_study(path)
    assert study.name
    assert study.imported or study.configs


def test_full_study_is_the_tr114_matrix_with_tr110_options():
    """27 configs (TR110's 30 without 101, 102, 105), options exactly as TR110 ran them."""
    study = load_study(ROOT / "config.yaml")
    assert study.runs == 5
    assert len(study.configs) == 27
    expected_ids = []
    for d in sorted(TR110.glob("phase_*_test_*")):
        num = int(d.name.split("_test_")[1])
        if num in (101, 102, 105):
            continue
        cid = f"test{num:03d}"
        expected_ids.append(cid)
        metrics = json.loads((d / "run_1" / "metrics.json").read_text())
        summary = json.loads((d / "summary.json").read_text())
        cfg = study.config(cid)
        assert cfg.scenario == summary["scenario"]
        assert cfg.agent_options("collector").to_dict() == metrics["collector"]["configuration"], (
            cid
        )
        assert cfg.agent_options("insight").to_dict() == metrics["insight"]["configuration"], cid
    assert study.config_ids == expected_ids
    counts = {s: sum(c.scenario == s for c in study.configs) for s in study.raw["scenarios"]}
    assert counts == {"baseline_vs_chimera": 7, "chimera_hetero": 7, "chimera_homo": 13}


def test_defaults_fill_every_section():
    study = study_from_dict(minimal())
    assert study.runs == 5 and study.model == "smollm2:135m"
    assert study.backend["kind"] == "embedded" and study.backend["num_thread"] == "auto"
    assert [s.name for s in study.servers] == ["a", "b"]
    assert [a.server for a in study.config("c1").agents] == ["a", "b"]
    assert study.timeouts == {"connect_s": 10.0, "request_s": 300.0, "load_s": 600.0}
    assert study.contention == {"legacy_speedup": 1.5, "ttft_ms": 3000.0, "throughput_pct": 70.0}
    assert study.report["slo"]["max_p95_ttft_ms"] == 2000
    assert [c.num_predict for c in study.workloads["collector"].calls] == [40, 40]
    assert all(c.prompt.is_file() for w in study.workloads.values() for c in w.calls)


def test_phase_order_alternates_with_the_run_index():
    study = study_from_dict(minimal(phase_order="alternate"))
    assert study.phase_order_for(1, "c1") == ["solo", "concurrent"]
    assert study.phase_order_for(2, "c1") == ["concurrent", "solo"]
    assert study.phase_order_for(2, "c1", sequential=True) == ["concurrent", "solo", "sequential"]
    fixed = study_from_dict(minimal(phase_order="solo_first"))
    assert fixed.phase_order_for(2, "c1") == ["solo", "concurrent"]
    assert fixed.phase_order_for(2, "c1", sequential=True) == ["sequential", "solo", "concurrent"]


def test_balanced_order_has_as_many_runs_of_each_order_over_the_study():
    # 5 runs (odd) of 3 configs: alternate would give 3 forward and 2 reversed runs to every
    # config (9 against 6); balanced starts every other config reversed, so each config still
    # alternates and the study has 8 and 7.
    configs = [{"id": f"c{i}", "scenario": "chimera_homo"} for i in range(1, 4)]
    study = study_from_dict({"study": "t", "runs": 5, "configs": configs})
    assert study.phase_order == "balanced"
    orders = {c: [study.phase_order_for(r, c)[0] for r in range(1, 6)] for c in study.config_ids}
    assert orders["c1"] == ["solo", "concurrent", "solo", "concurrent", "solo"]
    assert orders["c2"] == ["concurrent", "solo", "concurrent", "solo", "concurrent"]
    firsts = [o for runs in orders.values() for o in runs]
    assert sorted((firsts.count("solo"), firsts.count("concurrent"))) == [7, 8]


def test_config_hash_tracks_what_is_measured_only():
    base = study_from_dict(minimal())
    changed_report = study_from_dict(minimal(report={"title": "another title"}, retries=3))
    changed_options = study_from_dict(
        {
            **minimal(),
            "configs": [
                {"id": "c1", "scenario": "chimera_homo", "options": {"insight": {"num_ctx": 512}}}
            ],
        }
    )
    assert base.config_hash("c1") == changed_report.config_hash("c1")
    assert base.config_hash("c1") != changed_options.config_hash("c1")


BAD = [
    ({"runs": 0}, "runs"),
    ({"runs": "five"}, "runs"),
    ({"coordinator": "trio"}, "coordinator"),
    ({"phase_order": "random"}, "phase_order"),
    ({"study": "Bad Name"}, "study"),
    ({"model": ""}, "model"),
    ({"backend": {"kind": "vllm"}}, "backend.kind"),
    ({"backend": {"num_thread": 0}}, "backend.num_thread"),
    ({"servers": [{"name": "a", "port": 70000}]}, "servers[0].port"),
    ({"servers": [{"name": "a", "port": 0}]}, "servers[0].port"),
    ({"servers": [{"name": "a", "port": 11434}, {"name": "b", "port": 11434}]}, "servers[1].port"),
    ({"servers": [{"name": "a"}, {"name": "a"}]}, "servers[1].name"),
    ({"servers": [{"name": "a", "url": "http://x:1"}]}, "servers[0].url"),
    (
        {"backend": {"kind": "external"}, "servers": [{"name": "a", "url": "ftp://x"}]},
        "servers[0].url",
    ),
    (
        {"backend": {"kind": "external"}, "servers": [{"name": "a"}, {"name": "b"}]},
        "servers[0].url",
    ),
    ({"agents": [{"name": "x", "workload": "collector", "server": "zzz"}]}, "agents[0].server"),
    ({"agents": [{"name": "x", "workload": "nope", "server": "a"}]}, "agents[0].workload"),
    ({"timeouts": {"request_s": -1}}, "timeouts.request_s"),
    ({"contention": {"throughput_pct": 150}}, "contention.throughput_pct"),
    ({"unknown_key": 1}, "unknown key"),
    ({"workloads": {"w": {"calls": []}}}, "workloads.w.calls"),
    (
        {"workloads": {"w": {"calls": [{"prompt": "missing.md.j2", "num_predict": 4}]}}},
        "workloads.w.calls[0].prompt",
    ),
    ({"report": {"reference": ["tr999"]}}, "report.reference[0]"),
    # one server under two names: a "dedicated" topology that is really shared
    (
        {
            "backend": {"kind": "external"},
            "servers": [
                {"name": "a", "url": "http://127.0.0.1:11434"},
                {"name": "b", "url": "http://localhost:11434"},
            ],
        },
        "servers[1].url: http://localhost:11434 is the same server as 'a'",
    ),
    (
        {
            "backend": {"kind": "external"},
            "servers": [
                {"name": "a", "url": "http://10.0.0.5:11434"},
                {"name": "b", "url": "http://10.0.0.5:11434/"},
            ],
        },
        "servers[1].url",
    ),
    (
        {
            "backend": {"kind": "external"},
            "servers": [
                {"name": "a", "url": "http://127.0.0.1"},
                {"name": "b", "url": "http://127.0.0.1:80"},
            ],
        },
        "servers[1].url",
    ),
]


@pytest.mark.parametrize(("change", "key"), BAD, ids=[k for _, k in BAD])
def test_bad_study_keys_are_named(change, key):
    with pytest.raises(ConfigError) as info:
        study_from_dict(minimal(**change))
    assert key in str(info.value)


BAD_CONFIGS = [
    (
        [{"id": "c1", "scenario": "chimera_homo"}, {"id": "c1", "scenario": "chimera_homo"}],
        "configs[1].id",
    ),
    ([{"id": "c1", "scenario": "unknown_scenario"}], "configs[0].scenario"),
    (
        [{"id": "c1", "scenario": "chimera_homo", "options": {"insight": {"num_ctx": "big"}}}],
        "num_ctx",
    ),
    (
        [{"id": "c1", "scenario": "chimera_homo", "options": {"insight": {"temprature": 0.5}}}],
        "temprature",
    ),
    (
        [{"id": "c1", "scenario": "chimera_homo", "options": {"ghost": {}}}],
        "configs[0].options.ghost",
    ),
    (
        [{"id": "c1", "scenario": "chimera_homo", "options": {"insight": {"num_predict": 5}}}],
        "num_predict",
    ),
    ([{"id": "c 1", "scenario": "chimera_homo"}], "configs[0].id"),
    ([], "configs"),
    *(
        ([{"id": "c1", "scenario": "chimera_homo", "options": {"insight": {k: v}}}], f"insight.{k}")
        for k, v in [
            ("num_thread", -2),
            ("num_ctx", 0),
            ("num_batch", -1),
            ("num_gpu", -2),
            ("temperature", -0.1),
            ("top_p", 1.5),
            ("top_p", -0.1),
            ("min_p", 2),
            ("typical_p", 1.01),
            ("top_k", -1),
            ("repeat_penalty", -1),
            ("repeat_last_n", -2),
            ("stop", [1]),
        ]
    ),
]


@pytest.mark.parametrize(("configs", "key"), BAD_CONFIGS, ids=[k for _, k in BAD_CONFIGS])
def test_bad_configs_are_named(configs, key):
    with pytest.raises(ConfigError) as info:
        study_from_dict({"study": "t", "configs": configs})
    assert key in str(info.value)


def test_configs_and_import_exclude_each_other():
    with pytest.raises(ConfigError):
        study_from_dict({**minimal(), "import": {"format": "tr110"}})
    with pytest.raises(ConfigError):
        study_from_dict({"study": "t"})


def test_missing_and_unparsable_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_study(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("study: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_study(bad)


# ---------------------------------------------------------------------------------------------
# Servers that speak the OpenAI API
# ---------------------------------------------------------------------------------------------

OPENAI_SERVERS = [
    {"name": "a", "url": "http://127.0.0.1:8000", "api": "openai", "api_key_env": "T_KEY"},
    {"name": "b", "url": "http://127.0.0.1:8001", "api": "openai"},
]


def openai_study(**extra):
    return minimal(backend={"kind": "external"}, servers=OPENAI_SERVERS, **extra)


def test_openai_servers_load_with_their_api_and_key_variable():
    study = study_from_dict(openai_study())
    a, b = study.servers
    assert (a.api, a.api_key_env, b.api, b.api_key_env) == ("openai", "T_KEY", "openai", None)
    assert study_from_dict(minimal()).servers[0].api == "ollama"


def test_the_api_key_comes_from_the_named_variable_only(monkeypatch):
    server = study_from_dict(openai_study()).servers[0]
    monkeypatch.delenv("T_KEY", raising=False)
    with pytest.raises(ConfigError, match=r"T_KEY \(servers\[\]\.api_key_env\) is not set"):
        server.api_key()
    monkeypatch.setenv("T_KEY", "sk-1")
    assert server.api_key() == "sk-1"
    assert "sk-1" not in json.dumps(study_from_dict(openai_study()).measurement_fingerprint("c1"))


def test_the_api_changes_the_config_hash_and_the_default_does_not():
    base = study_from_dict(minimal())
    explicit = study_from_dict(minimal(servers=[{"name": "a", "api": "ollama"}, {"name": "b"}]))
    openai = study_from_dict(minimal(servers=[{"name": "a", "api": "openai"}, {"name": "b"}]))
    assert base.config_hash("c1") == explicit.config_hash("c1")
    assert base.config_hash("c1") != openai.config_hash("c1")


BAD_OPENAI = [
    ({"servers": [{"name": "a", "api": "grpc"}, {"name": "b"}]}, "servers[0].api"),
    ({"servers": [{"name": "a", "api_key_env": "1X"}, {"name": "b"}]}, "servers[0].api_key_env"),
    (
        {"servers": [{"name": "a", "url": "http://h:1", "api_key_env": "K"}, OPENAI_SERVERS[1]]},
        "servers[0].api_key_env: only servers that speak the OpenAI API take an API key",
    ),
    ({"endpoint": "generate"}, "endpoint: 'generate' is Ollama's /api/generate"),
    (
        {
            "configs": [
                {"id": "c1", "scenario": "chimera_homo", "options": {"insight": {"num_ctx": 512}}}
            ]
        },
        "configs[0].options.insight.num_ctx: the OpenAI API has no equivalent",
    ),
    (
        {
            "configs": [
                {"id": "c1", "scenario": "chimera_homo", "options": {"collector": {"top_k": 40}}}
            ]
        },
        "configs[0].options.collector.top_k",
    ),
]


@pytest.mark.parametrize(("change", "message"), BAD_OPENAI, ids=[m for _, m in BAD_OPENAI])
def test_what_an_openai_server_cannot_take_is_named(change, message):
    with pytest.raises(ConfigError) as info:
        study_from_dict({**openai_study(), **change})
    assert message in str(info.value)


def test_openai_sampling_options_are_accepted():
    options = {"insight": {"temperature": 0.8, "top_p": 0.9, "seed": 7, "stop": ["\n\n"]}}
    study = study_from_dict(
        openai_study(configs=[{"id": "c1", "scenario": "chimera_homo", "options": options}])
    )
    assert study.config("c1").agent_options("insight").temperature == 0.8


def test_ollama_servers_get_their_concurrency_settings_set():
    ollama = {"backend": {"kind": "ollama"}}
    study = study_from_dict(minimal(**ollama))
    assert study.server_settings("a") == {
        "OLLAMA_NUM_PARALLEL": "1",
        "OLLAMA_MAX_LOADED_MODELS": "1",  # each server holds one model in every config
        "OLLAMA_KEEP_ALIVE": "-1",
    }
    assert study.server_settings_source == "set"
    two_models = {
        "agents": [
            {"name": "x", "workload": "collector", "server": "a"},
            {"name": "y", "workload": "insight", "server": "a", "model": "other:1b"},
        ]
    }
    study = study_from_dict(minimal(**ollama, **two_models))
    assert study.server_settings("a")["OLLAMA_MAX_LOADED_MODELS"] == "2"
    explicit = {"kind": "ollama", "num_parallel": 4, "max_loaded_models": 3, "keep_alive": "10m"}
    assert study_from_dict(minimal(backend=explicit)).server_settings("b") == {
        "OLLAMA_NUM_PARALLEL": "4",
        "OLLAMA_MAX_LOADED_MODELS": "3",
        "OLLAMA_KEEP_ALIVE": "10m",
    }
    assert study_from_dict(minimal()).server_settings("a") == {}  # embedded


def test_external_servers_declare_their_settings_and_the_fingerprint_keeps_without():
    servers = [
        {"name": "a", "url": "http://10.0.0.5:11434", "settings": {"OLLAMA_NUM_PARALLEL": 4}},
        {"name": "b", "url": "http://10.0.0.6:11434", "settings": {"flash_attention": True}},
    ]
    study = study_from_dict(minimal(backend={"kind": "external"}, servers=servers))
    assert study.server_settings("a") == {"OLLAMA_NUM_PARALLEL": "4"}
    assert study.server_settings("b") == {"flash_attention": "true"}
    assert study.server_settings_source == "declared"
    fingerprint = study.measurement_fingerprint("c1")["servers"]
    assert fingerprint[0]["settings"] == {"OLLAMA_NUM_PARALLEL": "4"}
    plain = study_from_dict(minimal()).measurement_fingerprint("c1")["servers"]
    assert plain == [
        {"name": "a", "port": None, "url": None},
        {"name": "b", "port": None, "url": None},
    ]


def test_llama_server_servers_speak_openai_and_get_their_slots_set():
    servers = [{"name": "a", "parallel": 4}, {"name": "b"}]
    study = study_from_dict(minimal(backend={"kind": "llama_server"}, servers=servers))
    assert [s.api for s in study.servers] == ["openai", "openai"]  # its only API
    assert study.server_settings("a") == {"parallel": "4", "ctx_size": "2048"}
    assert study.server_settings("b") == {"parallel": "1", "ctx_size": "2048"}
    assert study.server_settings_source == "set"
    assert study.served_model("a") == study.model
    fingerprint = study.measurement_fingerprint("c1")
    assert fingerprint["servers"][0]["parallel"] == 4
    assert "parallel" not in fingerprint["servers"][1]
    # the new keys have no schema default, so studies measured before them keep their hashes
    assert study_from_dict(minimal()).backend.keys().isdisjoint({"ctx_size", "llama_server_binary"})


def test_a_declared_parallel_is_recorded_for_ollama_and_external_servers():
    ollama = study_from_dict(
        minimal(
            backend={"kind": "ollama", "num_parallel": 2},
            servers=[{"name": "a", "parallel": 3}, {"name": "b"}],
        )
    )
    assert ollama.server_settings("b")["OLLAMA_NUM_PARALLEL"] == "2"
    assert ollama.server_settings("a")["OLLAMA_NUM_PARALLEL"] == "3"  # the server's own wins
    external = study_from_dict(
        minimal(
            backend={"kind": "external"},
            servers=[
                {"name": "a", "url": "http://10.0.0.5:8000", "api": "openai", "parallel": 8},
                {"name": "b", "url": "http://10.0.0.6:8000", "api": "openai"},
            ],
        )
    )
    assert external.server_settings("a") == {"parallel": "8"}


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (
            {"backend": {"kind": "llama_server"}, "servers": [{"name": "a", "api": "ollama"}]},
            "servers[0].api",
        ),
        ({"servers": [{"name": "a", "parallel": 2}]}, "servers[0].parallel"),
        ({"backend": {"kind": "embedded", "ctx_size": 4096}}, "backend.ctx_size"),
        (
            {"backend": {"kind": "ollama", "llama_server_binary": "x"}},
            "backend.llama_server_binary",
        ),
        (
            {
                "backend": {"kind": "llama_server"},
                "agents": [
                    {"name": "x", "workload": "collector", "server": "a"},
                    {"name": "y", "workload": "insight", "server": "a", "model": "other:1b"},
                ],
            },
            "llama-server 'a' serves one model",
        ),
    ],
)
def test_llama_server_mistakes_are_named(change, key):
    with pytest.raises(ConfigError) as info:
        study_from_dict(minimal(**change))
    assert key in str(info.value)


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"servers": [{"name": "a", "settings": {"x": 1}}, {"name": "b"}]}, "servers[0].settings"),
        ({"backend": {"kind": "embedded", "num_parallel": 2}}, "backend.num_parallel"),
        ({"backend": {"kind": "ollama", "keep_alive": "soon"}}, "backend.keep_alive"),
        ({"backend": {"kind": "ollama", "num_parallel": 0}}, "backend.num_parallel"),
    ],
)
def test_misplaced_or_bad_server_settings_are_named(change, key):
    with pytest.raises(ConfigError) as info:
        study_from_dict(minimal(**change))
    assert key in str(info.value)


def test_the_schema_gives_every_option_a_type_and_range():
    options = config_schema()["$defs"]["options"]["properties"]
    assert sorted(options) == sorted(Options.known_keys())
    assert all("type" in spec or "oneOf" in spec for spec in options.values())
