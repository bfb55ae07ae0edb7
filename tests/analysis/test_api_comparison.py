"""The API as a factor: configs of the same setup measured through both APIs are paired (the
config as the unit); configs whose servers had no forced unload are named."""

from __future__ import annotations

import pandas as pd
import pytest
from synthetic import build

from mabench.analysis.stats.comparisons import comparisons
from mabench.analysis.stats.summaries import isolation_gaps, per_config


def _with_openai_twins(shift: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The synthetic study on Ollama's API, plus copies of its dedicated configs measured
    through the OpenAI API with true efficiencies ``shift`` (+ 0, 0.2, 0.4, ...) lower."""
    t = build()
    runs, agents = t["runs"].assign(api="ollama"), t["agents"].assign(api="ollama")
    twins = [c for c in runs["config_id"].unique() if not c.endswith("s")]
    r = runs[runs["config_id"].isin(twins)].copy()
    a = agents[agents["config_id"].isin(twins)].copy()
    for df in (r, a):
        df["config_id"] = df["config_id"] + "-oai"
        df["api"] = "openai"
    # a different shift per config (shift, shift + 0.2, ...): config-level differences vary
    extra = {c: 0.2 * i for i, c in enumerate(sorted(r["config_id"].unique()))}
    r["true_efficiency"] = r["true_efficiency"] - shift - r["config_id"].map(extra)
    r["isolation_unavailable"] = "a;b"
    return pd.concat([runs, r]), pd.concat([agents, a])


def test_configs_of_the_same_setup_through_both_apis_are_paired():
    runs, agents = _with_openai_twins(3.0)
    table = comparisons(runs, agents)
    api = table[table["by"] == "api"].set_index("metric")
    true, seed = api.loc["true_efficiency"], api.loc["seed_efficiency"]
    assert (true["a"], true["b"], true["design"]) == ("ollama", "openai", "paired")
    n_twins = runs.loc[runs["api"] == "openai", "config_id"].nunique()
    assert true["n_pairs"] == n_twins == 5
    assert true["diff"] == pytest.approx(3.4)  # a - b: Ollama minus OpenAI, mean over pairs
    assert true["diff_ci_low"] < 3.4 < true["diff_ci_high"] and true["p_holm"] < 0.05
    assert seed["diff"] == pytest.approx(0.0)


def test_configs_with_other_models_or_options_do_not_pair():
    runs, agents = _with_openai_twins(3.0)
    agents.loc[agents["config_id"] == "test001-oai", "model"] = "other:7b"
    agents.loc[agents["config_id"] == "test004-oai", "options_json"] = '{"top_p": 0.1}'
    api = comparisons(runs, agents)
    true = api[(api["by"] == "api") & (api["metric"] == "true_efficiency")].iloc[0]
    assert true["n_pairs"] == 3


def test_a_single_api_has_nothing_to_compare_and_per_config_names_the_api():
    runs, agents = _with_openai_twins(0.0)
    assert "api" not in set(comparisons(runs[runs["api"] == "ollama"], agents)["by"])
    table = per_config(runs, agents, pd.DataFrame(columns=["level", "metric", "group"]))
    assert set(table.loc[table["config_id"].str.endswith("-oai"), "api"]) == {"openai"}


def test_configs_without_a_forced_unload_are_named():
    runs, _ = _with_openai_twins(0.0)
    gaps = isolation_gaps(runs)
    assert gaps["config_id"].tolist() == sorted(
        c for c in runs["config_id"].unique() if c.endswith("-oai")
    )
    assert set(gaps["servers"]) == {"a, b"} and set(gaps["runs"]) == {5}
    assert isolation_gaps(build()["runs"]).empty
