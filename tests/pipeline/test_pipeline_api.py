"""The api study: one model through Ollama's API and the OpenAI API on the embedded server,
and a report with the API as a factor (real Snakemake, real embedded servers)."""

from __future__ import annotations

import re

import pandas as pd
import pytest
import yaml
from snake import STUDIES, snakemake

pytestmark = pytest.mark.slow


def test_the_api_study_reports_the_api_as_a_factor(tmp_path):
    study = yaml.safe_load((STUDIES / "api.yaml").read_text())
    study["runs"] = 2  # the study itself, shortened
    for workload in study["workloads"].values():
        for call in workload["calls"]:
            call["num_predict"] = 8
    study["corpus"] = {"files": 1}
    config = tmp_path / "api.yaml"
    config.write_text(yaml.safe_dump(study))
    snakemake(tmp_path, configfile=config, check=True, timeout=1500)
    out = tmp_path / "results" / "api"

    runs = pd.read_parquet(out / "tables" / "runs.parquet")
    apis = runs.drop_duplicates("config_id").set_index("config_id")["api"].to_dict()
    assert apis == {
        "mixed-ollama": "ollama",
        "mixed-openai": "openai",
        "homo-ollama": "ollama",
        "homo-openai": "openai",
    }
    # the embedded server speaks Ollama's API beside /v1: forced unload and load everywhere
    assert set(runs["isolation_unavailable"]) == {""} and runs["isolation_verified"].all()
    agents = pd.read_parquet(out / "tables" / "agents.parquet")
    assert set(agents.loc[agents["config_id"].str.endswith("openai"), "api"]) == {"openai"}
    calls = pd.read_parquet(out / "tables" / "calls.parquet")
    sources = calls.groupby("api")["eval_count_source"].unique().to_dict()
    assert list(sources["ollama"]) == ["final_metrics"] and list(sources["openai"]) == ["usage"]
    # the embedded server adds llama.cpp-style timings on /v1: the server split is known
    assert calls.loc[calls["api"] == "openai", "prompt_eval_ms"].notna().all()

    report = (out / "technical_report.md").read_text()
    start = report.index("## API comparison")
    section = report[start : report.index("\n## ", start + 1)]
    # the API as a factor, the config as the unit: each *-ollama config paired with its twin
    row = r"\|\s*`seed_efficiency`\s*\|\s*ollama\s*\|\s*openai\s*\|\s*paired\s*\|\s*2\s*\|"
    assert re.search(row, section), section
    # two servers split the machine, and an agent on the OpenAI API cannot ask its server for
    # every CPU: the OpenAI configs have no sequential baseline, so true efficiency pairs none
    assert set(runs.loc[runs["api"] == "openai", "baseline"]) == {"none"}
    assert set(runs.loc[runs["api"] == "ollama", "baseline"]) == {"sequential"}
    row = r"\|\s*`true_efficiency`\s*\|\s*ollama\s*\|\s*openai\s*\|\s*paired\s*\|\s*0\s*\|"
    assert re.search(row, section), section
    for config in ("mixed-ollama", "mixed-openai", "homo-ollama", "homo-openai"):
        assert config in section
    assert "Every server had its forced unload" in section
