"""A real third-party OpenAI-compatible server: llama-cpp-python's own (``python -m
llama_cpp.server``) on the bundled GGUF, with an API key; our client against it, and a study
through the whole workflow (external backend, ``api: openai``).

That server streams SSE, ignores ``stream_options.include_usage`` (so the client counts the
deltas) and sends no timings: what the run records and the report must say honestly. It
serves one request at a time; started without ``--interrupt_requests False`` it cuts off the
streaming answer when another request arrives, which a concurrent phase would report as a
broken stream.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from llama_cpp_server import LlamaCppServer, running
from snake import snakemake

from mabench.measure.openai_client import OpenAIClient
from mabench.measure.records import read_record

MODEL = "smollm2:135m"
KEY = "sk-llama-e2e-5b1f"


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaCppServer]:
    # by default a new request interrupts the one streaming (it ends without a finish_reason,
    # which the harness reports as a broken answer): queue instead
    flags = ("--n_threads", "1", "--n_ctx", "2048", "--interrupt_requests", "False")
    with running(tmp_path_factory.mktemp("llama") / "server.log", *flags, api_key=KEY) as server:
        yield server


def test_our_client_against_llama_cpp_server(llama_server: LlamaCppServer) -> None:
    with OpenAIClient(llama_server.url, api_key=KEY) as c:
        assert c.models() == [MODEL]
        r = c.call("chat", MODEL, "Name a colour.", options={"num_predict": 6, "seed": 1})
    assert r.text and r.done_reason in ("stop", "length")
    m = r.metrics
    # include_usage is ignored and no timings come: the client counted the content deltas
    assert (m.completion_tokens_source, m.prompt_tokens, m.prompt_ms) == ("stream", None, None)
    assert 0 < m.completion_tokens <= 6
    assert r.t_sent_ns < r.t_first_token_ns <= r.t_last_token_ns < r.t_done_ns


def _study(url: str) -> dict:
    calls = [
        {"prompt": "collector_analyse.md.j2", "num_predict": 8},
        {"prompt": "collector_report.md.j2", "num_predict": 8},
    ]
    return {
        "study": "llama-openai",
        "runs": 2,
        "backend": {"kind": "external"},
        "servers": [{"name": "llama", "url": url, "api": "openai", "api_key_env": "LLAMA_KEY"}],
        "workloads": {"w": {"calls": calls}},
        "agents": [
            {"name": "collector", "workload": "w", "server": "llama"},
            {"name": "insight", "workload": "w", "server": "llama"},
        ],
        "corpus": {"files": 1},
        "configs": [
            {
                "id": "shared-openai",
                "scenario": "chimera_homo",
                "options": {"collector": {"temperature": 0.7}, "insight": {"temperature": 0.7}},
            }
        ],
    }


@pytest.mark.slow
def test_a_study_through_the_workflow_on_llama_cpp_server(
    llama_server: LlamaCppServer, tmp_path: Path
) -> None:
    config = tmp_path / "llama.yaml"
    config.write_text(yaml.safe_dump(_study(llama_server.url)))
    proc = snakemake(tmp_path, configfile=config, env={"LLAMA_KEY": KEY}, check=True)
    out = tmp_path / "results" / "llama-openai"
    for run in (1, 2):
        record = read_record(out / "runs" / "shared-openai" / f"run_{run}.json")
        assert [(s.api, s.version) for s in record.topology.servers] == [("openai", None)]
        assert record.isolation.unavailable == ["llama"]
        # an external server: the harness cannot know its share of the machine, so no
        # sequential baseline (the study could declare baseline: solo); interference is known
        assert record.protocol.baseline.kind is None
        assert record.metrics.true_efficiency is None
        assert record.metrics.interference_efficiency is not None
        assert all(load.load_duration_ns is None for load in record.loads)
        for call in record.calls:
            assert call.server_metrics.eval_count_source == "stream"
            assert 0 < call.server_metrics.eval_count <= 8
            assert call.t_first_token_ns is not None
    unload = json.loads((out / "unload" / "shared-openai.json").read_text())
    assert unload["verified"] is True and unload["unavailable"] == ["llama"]
    report = (out / "technical_report.md").read_text()
    section = report[report.index("## API comparison") :]
    assert "Servers without a forced unload" in section and "shared-openai" in section
    assert "OpenAI API" in report  # the methodology names the API and what it lacks
    assert "**No sequential baseline was measured**" in report  # and says what it lacks
    assert "[1/2]" in proc.stderr and "[2/2]" in proc.stderr  # progress lines
    # the key went to the server only: not into a record, a log, a table or the report
    for path in out.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path
    assert KEY not in proc.stdout + proc.stderr
