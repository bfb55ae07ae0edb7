"""Bundled reference datasets, and our results set beside them metric by metric.

``load_reference("tr114")`` reads the two derived CSVs of TR114 v2 (the Rust re-run of TR110;
only these per-config and per-scenario statistics were published, MIT licence, see
``data/README.md``). Scenario names are normalised to our spelling (``chimera-homo`` and
``chimera_homo`` are one scenario, ``chimera_homo``).

TR114 v2 measured the seed formula only (both agents timed while sharing the machine): there
is no true efficiency to compare with ours; the comparison says so per row.

:data:`TR114_CLAIMS` quotes numbers from TR114 v2's *text* (section given) so that
:func:`check_claims` can compute what its own CSV (or TR110's data, for claims about Python)
actually says. The quoted numbers are the only typed-in numbers in the report, and they are
always labelled as the reference's claims.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd

REFERENCES = ("tr114",)


def normalise_scenario(name: Any) -> Any:
    """``chimera-homo`` / ``Chimera Homo`` -> ``chimera_homo``."""
    if not isinstance(name, str):
        return name
    return "_".join(name.strip().lower().replace("-", " ").replace("_", " ").split())


@dataclass(frozen=True)
class ReferenceData:
    name: str
    title: str
    configs: pd.DataFrame  # config_id, scenario, mean_seed_efficiency, mean_seed_speedup, ...
    scenarios: pd.DataFrame  # scenario, n_configs, mean_seed_efficiency (merged spellings), ...
    scenarios_as_published: pd.DataFrame
    runs_per_config: int | None
    files: list[str] = field(default_factory=list)
    licence: str = ""


def _data_dir(name: str) -> Path:
    return Path(str(resources.files("mabench").joinpath(f"datasets/data/{name}")))


def load_reference(name: str) -> ReferenceData:
    """Load a bundled reference dataset by name (``"tr114"``)."""
    if name != "tr114":
        raise ValueError(f"unknown reference dataset {name!r}; known: {', '.join(REFERENCES)}")
    d = _data_dir("tr114")
    cfg_path, scen_path = d / "tr114_v2_config_stats.csv", d / "tr114_v2_scenario_stats.csv"
    raw = pd.read_csv(cfg_path)
    configs = pd.DataFrame(
        {
            "config_id": raw["config"].astype(str),
            "scenario": raw["scenario"].map(normalise_scenario),
            "scenario_as_published": raw["scenario"].astype(str),
            "mean_seed_efficiency": raw["average_efficiency"].astype(float),
            "mean_seed_speedup": raw["average_concurrency_speedup"].astype(float),
            "mean_throughput_delta": raw["average_throughput_delta"].astype(float),
            "mean_ttft_delta_ms": raw["average_ttft_delta_ms"].astype(float),
        }
    )
    scen_raw = pd.read_csv(scen_path)
    published = scen_raw.assign(scenario_normalised=scen_raw["scenario"].map(normalise_scenario))
    g = configs.groupby("scenario", sort=True)
    scenarios = pd.DataFrame(
        {
            "n_configs": g.size(),
            # Every TR114 config ran 5 times, so the mean of config means is the run mean.
            "mean_seed_efficiency": g["mean_seed_efficiency"].mean(),
            "mean_seed_speedup": g["mean_seed_speedup"].mean(),
            "best_config_efficiency": g["mean_seed_efficiency"].max(),
            "best_config": g["mean_seed_efficiency"].idxmax().map(configs["config_id"]),
            "worst_config_efficiency": g["mean_seed_efficiency"].min(),
            "worst_config": g["mean_seed_efficiency"].idxmin().map(configs["config_id"]),
        }
    ).reset_index()
    return ReferenceData(
        name="tr114",
        title="TR114 v2 (Rust re-run of TR110, dual Ollama)",
        configs=configs,
        scenarios=scenarios,
        scenarios_as_published=published,
        runs_per_config=5,
        files=[cfg_path.name, scen_path.name],
        licence="MIT, Copyright (c) 2025 Sahil Kadadekar (LICENSE-Chimeraforge)",
    )


def _ours_by(runs: pd.DataFrame, key: str) -> pd.DataFrame:
    g = runs.groupby(key, sort=True)
    return pd.DataFrame(
        {
            "n_runs": g.size(),
            "our_seed_efficiency": g["seed_efficiency"].mean(),
            "our_seed_speedup": g["seed_speedup"].mean(),
            "our_true_efficiency": g["true_efficiency"].mean(),
            "our_true_speedup": g["true_speedup"].mean(),
            "our_throughput_delta": g["throughput_delta"].mean(),
            "our_ttft_delta_ms": g["ttft_delta_ms"].mean(),
        }
    ).reset_index()


def _config_comparison(runs: pd.DataFrame, ref: ReferenceData) -> pd.DataFrame:
    """Ours beside theirs for the configs both have (differences ours minus theirs)."""
    cfg = _ours_by(runs, "config_id").merge(
        ref.configs.drop(columns=["scenario_as_published"]).rename(
            columns={
                "scenario": "ref_scenario",
                "mean_seed_efficiency": "ref_seed_efficiency",
                "mean_seed_speedup": "ref_seed_speedup",
                "mean_throughput_delta": "ref_throughput_delta",
                "mean_ttft_delta_ms": "ref_ttft_delta_ms",
            }
        ),
        on="config_id",
        how="inner",
    )
    cfg["seed_efficiency_diff_pp"] = cfg["our_seed_efficiency"] - cfg["ref_seed_efficiency"]
    cfg["true_vs_ref_seed_pp"] = cfg["our_true_efficiency"] - cfg["ref_seed_efficiency"]
    cfg["seed_speedup_diff"] = cfg["our_seed_speedup"] - cfg["ref_seed_speedup"]
    cfg["scenario"] = cfg["ref_scenario"]
    return cfg


def _scenario_comparison(cfg: pd.DataFrame, ref: ReferenceData) -> pd.DataFrame:
    """Ours beside theirs per scenario, each the mean of the config means over the configs both
    have (``n_configs``); ``ref_n_configs`` and the best config describe the whole reference."""
    g = cfg.groupby("scenario", sort=True)
    common = pd.DataFrame(
        {
            "n_configs": g.size(),
            "n_runs": g["n_runs"].sum(),
            "our_seed_efficiency": g["our_seed_efficiency"].mean(),
            "our_seed_speedup": g["our_seed_speedup"].mean(),
            "our_true_efficiency": g["our_true_efficiency"].mean(),
            "ref_seed_efficiency": g["ref_seed_efficiency"].mean(),
            "ref_seed_speedup": g["ref_seed_speedup"].mean(),
        }
    ).reset_index()
    whole = ref.scenarios.rename(
        columns={
            "n_configs": "ref_n_configs",
            "best_config_efficiency": "ref_best_config_efficiency",
            "best_config": "ref_best_config",
            "worst_config_efficiency": "ref_worst_config_efficiency",
            "worst_config": "ref_worst_config",
        }
    ).drop(columns=["mean_seed_efficiency", "mean_seed_speedup"])
    sc = common.merge(whole, on="scenario", how="outer")
    sc["n_configs"] = sc["n_configs"].fillna(0).astype(int)
    sc["seed_efficiency_diff_pp"] = sc["our_seed_efficiency"] - sc["ref_seed_efficiency"]
    sc["true_vs_ref_seed_pp"] = sc["our_true_efficiency"] - sc["ref_seed_efficiency"]
    return sc


def _metric_pairs(
    runs: pd.DataFrame, cfg: pd.DataFrame, ref: ReferenceData
) -> list[tuple[str, Any, Any]]:
    """(metric, ours, theirs) for the study-level comparison: means of config means over the
    configs both have (``cfg``), so both sides average the same configs."""
    k = float(len(cfg))
    return [
        ("configs compared (both have them)", k, k),
        ("configs in the study", float(runs["config_id"].nunique()), float(len(ref.configs))),
        (
            "runs of the compared configs",
            float(cfg["n_runs"].sum()),
            k * (ref.runs_per_config or 1),
        ),
        (
            "mean seed efficiency (%)",
            cfg["our_seed_efficiency"].mean(),
            cfg["ref_seed_efficiency"].mean(),
        ),
        ("mean seed speedup (x)", cfg["our_seed_speedup"].mean(), cfg["ref_seed_speedup"].mean()),
        ("mean true efficiency (%)", cfg["our_true_efficiency"].mean(), None),
        ("mean true speedup (x)", cfg["our_true_speedup"].mean(), None),
        (
            "best config mean seed efficiency (%)",
            cfg["our_seed_efficiency"].max(),
            cfg["ref_seed_efficiency"].max(),
        ),
        (
            "worst config mean seed efficiency (%)",
            cfg["our_seed_efficiency"].min(),
            cfg["ref_seed_efficiency"].min(),
        ),
        (
            "mean throughput delta, collector - insight (tok/s)",
            cfg["our_throughput_delta"].mean(),
            cfg["ref_throughput_delta"].mean(),
        ),
        (
            "mean TTFT delta, collector - insight (ms)",
            cfg["our_ttft_delta_ms"].mean(),
            cfg["ref_ttft_delta_ms"].mean(),
        ),
    ]


def _metric_comparison(runs: pd.DataFrame, cfg: pd.DataFrame, ref: ReferenceData) -> pd.DataFrame:
    """One row per metric: ours, theirs, the difference, or a note that they did not measure it."""
    rows = []
    for name, ours, theirs in _metric_pairs(runs, cfg, ref):
        ours_f = None if ours is None or pd.isna(ours) else float(ours)
        theirs_f = None if theirs is None or pd.isna(theirs) else float(theirs)
        note = ""
        if theirs is None:
            note = f"{ref.name} did not measure it"
        elif cfg.empty:
            note = f"no config in common with {ref.name}"
        rows.append(
            {
                "metric": name,
                "ours": ours_f,
                "reference": theirs_f,
                "difference": None if ours_f is None or theirs_f is None else ours_f - theirs_f,
                "note": note,
            }
        )
    return pd.DataFrame(rows)


def compare(runs: pd.DataFrame, ref: ReferenceData) -> dict[str, pd.DataFrame]:
    """Ours vs the reference per config, per scenario and overall, on the configs both have.

    Returns ``config`` (one row per config both have), ``scenario`` and ``metrics`` (long
    form: one row per metric, ours, theirs, difference, with the number of configs compared);
    scenario and study means are means of the config means of those configs on both sides.
    Differences are ours minus theirs.
    """
    runs = runs.assign(scenario=runs["scenario"].map(normalise_scenario))
    cfg = _config_comparison(runs, ref)
    return {
        "config": cfg,
        "scenario": _scenario_comparison(cfg, ref),
        "metrics": _metric_comparison(runs, cfg, ref),
    }


# ---------------------------------------------------------------------------------------------
# What TR114 v2's text says vs what the data says
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    """A number stated in the reference report's text (quoted, with its section)."""

    id: str
    section: str
    text: str
    claimed: float | None = None
    tolerance: float = 0.0  # half a unit of the last printed digit, unless stated approximate
    low: float | None = None  # for a claimed range
    high: float | None = None
    claimed_text: str | None = None  # for non-numeric claims (a list of configs)
    needs: str = "tr114"  # "tr114": checkable on the TR114 CSV; "tr110": on TR110's data


TR114_CLAIMS: tuple[Claim, ...] = (
    Claim(
        "tr114_overall_mean",
        "§3.1, §4.1",
        "Overall mean efficiency across all 135 runs",
        98.281,
        0.0005,
    ),
    Claim("tr114_mean_speedup", "§3.1, §4.2", "Mean concurrency speedup", 1.969, 0.0005),
    Claim(
        "tr114_best_config",
        "Executive summary, §3.3",
        "Best config average (test011)",
        99.396,
        0.0005,
    ),
    Claim("tr114_bvc_mean", "§3.2 Scenario 1", "Baseline vs Chimera mean efficiency", 97.37, 0.005),
    Claim("tr114_hetero_mean", "§3.2 Scenario 2", "Chimera hetero mean efficiency", 98.79, 0.005),
    Claim(
        "tr114_homo_mean",
        "§3.2 Scenario 3",
        "Chimera homo overall mean (chimera-homo + chimera_homo combined)",
        98.40,
        0.005,
    ),
    Claim("tr114_best_homo", "Appendix B", "Best chimera-homo config average (Rust)", 99.01, 0.005),
    Claim(
        "tr114_top5",
        "§3.3",
        "Top 5 configs by average efficiency",
        claimed_text="test011, test018, test200, test004, test201",
    ),
    Claim("tr114_n_configs", "Title block", "Configurations", 27, 0.0),
    Claim(
        "tr110_mean",
        "§4.4, Appendix B",
        "Python (TR110) mean efficiency, all runs",
        95.8,
        0.05,
        needs="tr110",
    ),
    Claim(
        "tr110_median",
        "Appendix B",
        "Python (TR110) median efficiency (stated as ~96.5 %)",
        96.5,
        0.5,
        needs="tr110",
    ),
    Claim(
        "tr110_peak_run",
        "§4.4, Appendix B",
        "Python (TR110) peak single run",
        99.25,
        0.005,
        needs="tr110",
    ),
    Claim(
        "tr110_std",
        "Appendix B",
        "Python (TR110) efficiency standard deviation (pp)",
        7.4,
        0.05,
        needs="tr110",
    ),
    Claim("tr110_cv", "Appendix B", "Python (TR110) efficiency CV (%)", 7.7, 0.05, needs="tr110"),
    Claim(
        "tr110_contention",
        "§4.4, Appendix B",
        "Python (TR110) contention rate (%)",
        low=10.0,
        high=15.0,
        needs="tr110",
    ),
    Claim(
        "tr110_best_homo",
        "§3.2",
        "Python (TR110) best chimera-homo config average (test108)",
        99.25,
        0.005,
        needs="tr110",
    ),
    Claim(
        "tr110_best_bvc",
        "§3.2",
        "Python (TR110) best baseline-vs-chimera config average (test202)",
        97.9,
        0.05,
        needs="tr110",
    ),
    Claim(
        "tr110_best_hetero",
        "§3.2",
        "Python (TR110) best chimera-hetero config average",
        99.0,
        0.05,
        needs="tr110",
    ),
)


def _tr114_value(claim_id: str, ref: ReferenceData) -> tuple[float | None, str | None]:
    c = ref.configs
    by_scen = c.groupby("scenario")["mean_seed_efficiency"]
    values: dict[str, Callable[[], Any]] = {
        "tr114_overall_mean": lambda: c["mean_seed_efficiency"].mean(),
        "tr114_mean_speedup": lambda: c["mean_seed_speedup"].mean(),
        "tr114_best_config": lambda: c["mean_seed_efficiency"].max(),
        "tr114_bvc_mean": lambda: by_scen.mean().get("baseline_vs_chimera"),
        "tr114_hetero_mean": lambda: by_scen.mean().get("chimera_hetero"),
        "tr114_homo_mean": lambda: by_scen.mean().get("chimera_homo"),
        "tr114_best_homo": lambda: by_scen.max().get("chimera_homo"),
        "tr114_n_configs": lambda: float(len(c)),
    }
    if claim_id == "tr114_top5":
        top = c.sort_values("mean_seed_efficiency", ascending=False).head(5)
        return None, ", ".join(top["config_id"])
    v = values[claim_id]()
    return (None if v is None or pd.isna(v) else float(v)), None


def _tr110_value(claim_id: str, tr110_runs: pd.DataFrame) -> float | None:
    eff = tr110_runs["seed_efficiency"].astype(float)
    cfg = tr110_runs.groupby(["scenario", "config_id"])["seed_efficiency"].mean()
    values: dict[str, Callable[[], Any]] = {
        "tr110_mean": eff.mean,
        "tr110_median": eff.median,
        "tr110_peak_run": eff.max,
        "tr110_std": eff.std,
        "tr110_cv": lambda: 100 * eff.std() / eff.mean(),
        "tr110_contention": lambda: 100 * tr110_runs["contention_legacy"].astype(bool).mean(),
        "tr110_best_homo": lambda: cfg.loc["chimera_homo"].max(),
        "tr110_best_bvc": lambda: cfg.loc["baseline_vs_chimera"].max(),
        "tr110_best_hetero": lambda: cfg.loc["chimera_hetero"].max(),
    }
    return float(values[claim_id]())


def _tr114_note(claim_id: str, ref: ReferenceData) -> str:
    """Computed context for a claim that disagrees (built from the data, never typed)."""
    c = ref.configs
    if claim_id == "tr114_homo_mean":
        homo = c[c["scenario"] == "chimera_homo"]
        dashed = homo[homo["scenario_as_published"].str.contains("-")]
        return (
            f"the {len(dashed)} configs spelled 'chimera-homo' alone average "
            f"{dashed['mean_seed_efficiency'].mean():.3f} %; all {len(homo)} homo configs "
            f"average {homo['mean_seed_efficiency'].mean():.3f} %"
        )
    if claim_id == "tr114_mean_speedup":
        return (
            "efficiency = 50 x speedup for two agents, so the stated mean efficiency implies a "
            f"mean speedup of {c['mean_seed_efficiency'].mean() / 50:.4f}"
        )
    return ""


def check_claims(ref: ReferenceData, tr110_runs: pd.DataFrame | None = None) -> pd.DataFrame:
    """Each quoted claim of the reference text beside the value computed from the data.

    ``agrees`` is True when the computed value rounds to the claimed one (within the claim's
    tolerance, or inside its range); claims about TR110 are checked only when ``tr110_runs``
    is given. Columns: claim_id, section, claim, claimed, claimed_text, computed,
    computed_text, difference, agrees, data.
    """
    rows = []
    for cl in TR114_CLAIMS:
        computed: float | None
        computed_text: str | None = None
        if cl.needs == "tr110":
            if tr110_runs is None or tr110_runs.empty:
                continue
            computed, data = _tr110_value(cl.id, tr110_runs), "TR110 runs (bundled)"
        else:
            computed, computed_text = _tr114_value(cl.id, ref)
            data = "TR114 v2 config CSV"
        if cl.claimed_text is not None:
            agrees = computed_text == cl.claimed_text
            claimed_text = cl.claimed_text
        elif cl.low is not None and cl.high is not None:
            agrees = computed is not None and cl.low <= computed <= cl.high
            claimed_text = f"{cl.low:g}-{cl.high:g}"
        else:
            agrees = computed is not None and abs(computed - float(cl.claimed or 0)) <= (
                cl.tolerance + 1e-9
            )
            claimed_text = None
        rows.append(
            {
                "claim_id": cl.id,
                "section": cl.section,
                "claim": cl.text,
                "claimed": cl.claimed,
                "claimed_text": claimed_text,
                "computed": computed,
                "computed_text": computed_text,
                "difference": (
                    None if computed is None or cl.claimed is None else float(computed - cl.claimed)
                ),
                "agrees": bool(agrees),
                "data": data,
                "note": _tr114_note(cl.id, ref) if cl.needs == "tr114" else "",
            }
        )
    return pd.DataFrame(rows)


def reference_tables(
    runs: pd.DataFrame, names: list[str], tr110_runs: pd.DataFrame | None = None
) -> dict[str, pd.DataFrame]:
    """Every comparison table for the named references, keyed ``<name>_<table>``."""
    out: dict[str, pd.DataFrame] = {}
    for name in names:
        ref = load_reference(name)
        for key, df in compare(runs, ref).items():
            out[f"{name}_{key}"] = df
        out[f"{name}_claims"] = check_claims(ref, tr110_runs)
    return out


__all__ = [
    "REFERENCES",
    "TR114_CLAIMS",
    "Claim",
    "ReferenceData",
    "check_claims",
    "compare",
    "load_reference",
    "normalise_scenario",
    "reference_tables",
]
