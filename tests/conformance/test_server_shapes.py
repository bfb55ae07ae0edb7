"""The conformance matrix: a study against each server shape the docs claim, through real
Snakemake, each completing with a record in which what the server left out is null.

One study, one config per shape, one run each, measured in one Snakemake invocation, then
aggregated, analysed and reported (``external`` backend: the test starts every server). The
shapes (the simulated ones are :data:`mabench.servers.simulated.SHAPES`, where each names the
real server and version it plays):

======================================  ====================================================
config                                  what it answers like
======================================  ====================================================
``ollama-current``                      Ollama since v0.9.7 (no load time in a load answer)
``ollama-old``                          Ollama v0.1.38 to v0.9.6 (``/api/ps`` has no
                                        ``context_length``)
``openai-current``                      OpenAI, SGLang, Ollama ``/v1``, llama.cpp's server
                                        (usage in an empty-``choices`` chunk when asked)
``openai-no-usage``                     llama-cpp-python, Ollama ``/v1`` before v0.5.2
``openai-usage-every-chunk``            vLLM with ``continuous_usage_stats``
``openai-finish-with-content``          vLLM (``finish_reason`` on the last content delta)
``openai-usage-in-finish``              llama.cpp's server before #15444 (usage and
                                        ``timings`` in the finish chunk)
``embedded-ollama``, ``embedded-openai``  ``mabench serve`` at its defaults, one per API
``llama-cpp-python``                    a real ``python -m llama_cpp.server`` at its defaults
``llama-server``                        llama.cpp's own server, built by ``make setup``, at
                                        its defaults (its slots batch the two agents; usage
                                        and ``timings`` in the last chunk)
======================================  ====================================================

Two shapes are measured in studies of their own, since their runs do not complete (which
would stop the shared study's analysis):

- ``ollama-no-ps`` (Ollama before v0.1.38, no ``/api/ps``): refused before any run, by the
  forced unload, with a message that names the server and the missing route;
- ``ollama-cached`` (Ollama up to v0.1.48: no ``prompt_eval_count`` for a cached prompt):
  today its runs fail (an expected failure, see the test).

Not covered: vLLM, SGLang and TGI themselves (played by the simulated shapes above). Where
``llama-server`` was not built (``make setup`` builds it), its shape is skipped, saying so.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml
from pipeline.snake import snakemake

from mabench.measure.records import RunRecord, read_record
from mabench.servers.embedded.registry import BUILTIN_MODEL

pytestmark = pytest.mark.slow

STUDY = "conformance"
TOKENS = 6  # num_predict of every measured call


@dataclass(frozen=True)
class Shape:
    """What a run against one server shape must record: where the token counts came from,
    which of the server's numbers are there (the rest must be null, never a made-up zero)."""

    api: str
    #: 2 on a simulated server; 1 on a server running a real model (cheaper on 2 cores, and
    #: llama_cpp.server at its defaults cuts a stream off when another request arrives)
    agents: int
    count_source: str  # each call's eval_count_source
    prompt_count: bool  # each call's prompt_eval_count is there
    durations: bool  # each call's prompt and eval durations are there
    load_time: bool  # each load's load_duration_ns is there
    context_length: bool | None  # /api/ps says each model's context (None: no /api/ps)


OLLAMA = Shape("ollama", 2, "final_metrics", True, True, False, True)
OPENAI = Shape("openai", 2, "usage", True, False, False, None)
SHAPES: dict[str, Shape] = {
    "ollama-current": OLLAMA,
    "ollama-old": Shape("ollama", 2, "final_metrics", True, True, False, False),
    "openai-current": OPENAI,
    "openai-no-usage": Shape("openai", 2, "stream", False, False, False, None),
    "openai-usage-every-chunk": OPENAI,
    "openai-finish-with-content": OPENAI,
    "openai-usage-in-finish": Shape("openai", 2, "usage", True, True, False, None),
    "embedded-ollama": Shape("ollama", 1, "final_metrics", True, True, True, True),
    "embedded-openai": Shape("openai", 1, "usage", True, True, False, None),
    "llama-cpp-python": Shape("openai", 1, "stream", False, False, False, None),
    "llama-server": Shape("openai", 2, "usage", True, True, False, None),
}
SIMULATED = [s for s in SHAPES if s.startswith(("ollama-", "openai-"))]
#: measured in studies of their own (see the module's docstring)
APART = {
    "ollama-cached": Shape("ollama", 2, "final_metrics", False, True, False, False),
    "ollama-no-ps": Shape("ollama", 2, "final_metrics", True, True, False, None),
}


def study(urls: dict[str, str], name: str = STUDY) -> dict[str, Any]:
    """A study with one config per server in ``urls`` (named after its shape), one run of two
    agents (one where :data:`SHAPES` says so) with two short calls each."""
    servers = [{"name": s, "url": url, "api": _shape(s).api} for s, url in urls.items()]
    workload = {
        "a": {
            "calls": [
                {"prompt": f"collector_{p}.md.j2", "num_predict": TOKENS}
                for p in ("analyse", "report")
            ]
        },
        "b": {
            "calls": [
                {"prompt": f"insight_{p}.md.j2", "num_predict": TOKENS}
                for p in ("insights", "recommendations")
            ]
        },
    }
    first = next(iter(urls))
    return {
        "study": name,
        "runs": 1,
        "backend": {"kind": "external"},
        # the matrix checks what servers say, not that a third-party one is deterministic:
        # a run whose phases differ is flagged, not failed (the simulated ones must match)
        "on_work_mismatch": "flag",
        "servers": servers,
        "workloads": workload,
        "agents": _agents(first),
        "corpus": {"files": 1},
        "configs": [
            {"id": s, "scenario": "chimera_homo", "agents": _agents(s), "options": {}} for s in urls
        ],
    }


def _shape(server: str) -> Shape:
    return APART[server] if server in APART else SHAPES[server]


def _agents(server: str) -> list[dict[str, str]]:
    agents = [{"name": "collector", "workload": "a", "server": server}]
    if _shape(server).agents == 2:
        agents.append({"name": "insight", "workload": "b", "server": server})
    return agents


def _snakemake(workdir: Path, config: dict[str, Any], check: bool = True) -> str:
    """Snakemake on ``config`` (its stderr); ``check``: fail the test if Snakemake fails."""
    path = workdir / f"{config['study']}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    proc = snakemake(workdir, configfile=path, check=check)
    assert check or proc.returncode != 0, "the study was expected to be refused"
    return proc.stderr


def _measure(workdir: Path, config: dict[str, Any]) -> Path:
    _snakemake(workdir, config)
    return workdir / "results" / config["study"]


@pytest.fixture(scope="module")
def results(
    tmp_path_factory: pytest.TempPathFactory,
    sim_servers: Callable[..., dict[str, str]],
    embedded_urls: dict[str, str],
    llama_cpp_url: str,
    llama_server_url: str | None,
) -> Path:
    """The matrix's study, measured, aggregated and reported: ``results/conformance``."""
    urls = sim_servers(*SIMULATED)
    urls |= {f"embedded-{api}": url for api, url in embedded_urls.items()}
    urls["llama-cpp-python"] = llama_cpp_url
    if llama_server_url is not None:
        urls["llama-server"] = llama_server_url
    return _measure(tmp_path_factory.mktemp("conformance"), study(urls))


def _record(results: Path, shape: str) -> RunRecord:
    path = results / "runs" / shape / "run_1.json"
    if shape == "llama-server" and not path.parent.exists():
        pytest.skip("no llama-server: `make setup` builds it (envs/build-llama-server.sh)")
    return read_record(path)


@pytest.mark.parametrize("shape", list(SHAPES))
def test_a_run_on_each_server_shape_records_what_the_server_said_and_nulls_the_rest(
    results: Path, shape: str
) -> None:
    expected, record = SHAPES[shape], _record(results, shape)
    assert record.metrics.concurrent_wall_s > 0
    phases = Counter(call.phase for call in record.calls)
    assert {"solo", "concurrent"} <= set(phases), phases
    assert set(phases.values()) == {2 * expected.agents}, phases  # calls x agents per phase
    for call in record.calls:
        m = call.server_metrics
        assert call.error is None and m is not None, call
        assert call.done_reason in ("length", "stop") and call.t_first_token_ns is not None
        assert m.eval_count_source == expected.count_source
        assert 0 < m.eval_count <= TOKENS
        assert (m.prompt_eval_count is not None) is expected.prompt_count, m
        assert (m.prompt_eval_duration_ns is not None) is expected.durations, m
        assert (m.eval_duration_ns is not None) is expected.durations, m
        assert (m.total_duration_ns is not None) is (expected.api == "ollama"), m
    assert [load.load_duration_ns is not None for load in record.loads] == [
        expected.load_time
    ] * expected.agents
    after = record.validity.isolation_after if record.validity else None
    if expected.context_length is None:  # no /api/ps: nothing listed, nothing checked
        assert record.isolation.unavailable == [shape]
    else:
        assert after is not None and after.verified, after
        listed = [m for models in after.loaded.values() for m in models]
        assert [m.name for m in listed] == [BUILTIN_MODEL]
        assert [m.context_length is not None for m in listed] == [expected.context_length]


@pytest.mark.parametrize("shape", SIMULATED)
def test_the_simulated_shapes_lose_no_token_and_do_the_same_work_in_both_phases(
    results: Path, shape: str
) -> None:
    """The simulated servers generate exactly what was asked: every token's text arrived
    (also the one that came with ``finish_reason``) and was counted once."""
    record = _record(results, shape)
    for call in record.calls:
        assert call.response_text.split() == [f"tok{i}" for i in range(TOKENS)], call
        assert call.server_metrics is not None and call.server_metrics.eval_count == TOKENS
        assert call.done_reason == "length"
    assert record.validity is not None and record.validity.work.matched


def test_the_analysis_reads_every_shape_and_keeps_its_nulls(results: Path) -> None:
    calls = pq.read_table(results / "tables" / "calls.parquet").to_pandas()
    measured = set(SHAPES) - ({"llama-server"} - set(calls["config_id"]))
    assert set(calls["config_id"]) == measured
    no_prompt = calls[calls["config_id"].isin(["openai-no-usage", "llama-cpp-python"])]
    assert no_prompt["prompt_eval_count"].isna().all()
    openai = calls[calls["config_id"].map(lambda c: SHAPES[c].api == "openai")]
    assert openai["load_ms"].isna().all()
    assert (results / "stats" / "summary.json").is_file()
    report = (results / "technical_report.md").read_text()
    assert all(shape in report for shape in measured)


def test_ollama_with_a_cached_prompt_records_a_null_prompt_count(
    tmp_path: Path, sim_servers: Callable[..., dict[str, str]]
) -> None:
    urls = sim_servers("ollama-cached")
    results = _measure(tmp_path, study(urls, name="conformance-cached"))
    record = _record(results, "ollama-cached")
    for call in record.calls:
        m = call.server_metrics
        assert m is not None and m.prompt_eval_count is None and m.prompt_eval_duration_ns is None
        assert m.eval_count == TOKENS


def test_an_ollama_without_api_ps_is_refused_before_any_run(
    tmp_path: Path, sim_servers: Callable[..., dict[str, str]]
) -> None:
    urls = sim_servers("ollama-no-ps")
    stderr = _snakemake(tmp_path, study(urls, name="conformance-no-ps"), check=False)
    url = urls["ollama-no-ps"]
    assert f"server 'ollama-no-ps' at {url} has no /api/ps (HTTP 404" in stderr
    assert "servers[].api: openai" in stderr  # what to do
    assert not re.search(r"^\s*(local)?rule run:", stderr, flags=re.M), "a run job started"
    assert not list((tmp_path / "results").rglob("run_*.json"))
