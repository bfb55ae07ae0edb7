"""The technical report renders for the TR110 and a synthetic full study; its numbers trace to
the Parquet outputs; data text is escaped; a template change re-renders only the report."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from synthetic import EVIL, build

from mabench.analysis import markdown as md
from mabench.analysis import plots, report, stats
from mabench.analysis.stats import estimators
from mabench.analysis.tables import read_table

ROOT = Path(__file__).resolve().parents[2]


def _text(study: Path) -> str:
    return (study / "technical_report.md").read_text(encoding="utf-8")


def _section(text: str, heading: str) -> str:
    start = text.index(f"## {heading}\n")
    nxt = text.find("\n## ", start + 1)
    return text[start : nxt if nxt != -1 else len(text)]


def _tables(block: str) -> list[list[list[str]]]:
    """Markdown tables in a block: list of rows of cells (escaped pipes respected)."""
    tables, current = [], []
    for line in [*block.splitlines(), ""]:
        if line.startswith("|"):
            cells = re.split(r"(?<!\\)\|", line.strip())[1:-1]
            current.append([c.strip() for c in cells])
        elif current:
            tables.append(current)
            current = []
    return tables


def _unescape(cell: str) -> str:
    return re.sub(r"\\(.)", r"\1", cell).strip("`")


@pytest.mark.parametrize("study", ["tr110_study", "full_study"])
def test_every_section_heading(study, request) -> None:
    text = _text(request.getfixturevalue(study))
    for heading in report.SECTIONS:
        assert f"\n## {heading}\n" in text, heading


@pytest.mark.parametrize("study", ["tr110_study", "full_study"])
def test_no_nan_or_none_leaks(study, request) -> None:
    text = _text(request.getfixturevalue(study))
    assert not re.search(r"\bnan\b", text, re.IGNORECASE)
    assert not re.search(r"\bNone\b", text)
    assert "Undefined" not in text and "{{" not in text and "{%" not in text


@pytest.mark.parametrize("study", ["tr110_study", "full_study"])
def test_tables_are_well_formed(study, request) -> None:
    for table in _tables(_text(request.getfixturevalue(study))):
        widths = {len(row) for row in table}
        assert len(widths) == 1, table[0]
        assert set(table[1]) == {"---"}


@pytest.mark.parametrize("study", ["tr110_study", "full_study"])
def test_overall_table_equals_values_recomputed_from_parquet(study, request) -> None:
    d = request.getfixturevalue(study)
    runs = read_table(d / "tables" / "runs.parquet", "runs").to_pandas()
    table = _tables(_section(_text(d), "Overall results"))[0]  # the headline's table follows
    header = table[0]
    assert header[:3] == ["Metric", "Unit", "n"]
    seen = set()
    for row in table[2:]:
        cell = dict(zip(header, row, strict=True))
        metric = _unescape(cell["Metric"])
        seen.add(metric)
        measured = runs[runs[metric].notna()]
        x = measured[metric].to_numpy(float)
        configs = measured["config_id"].to_numpy()
        assert int(cell["n"]) == len(x)
        f3 = lambda v: md.fmt_num(v, 3)  # noqa: E731
        assert cell["Mean"] == f3(x.mean())
        assert cell["Median"] == f3(np.median(x))
        assert cell["Min"] == f3(x.min()) and cell["Max"] == f3(x.max())
        assert cell["Std"] == f3(x.std(ddof=1))
        assert cell["CV (%)"] == (f3(100 * x.std(ddof=1) / x.mean()) if x.min() > 0 else "n/a")
        cond = estimators.conditional_interval(x, configs)
        assert cell["95 % CI (these configs)"] == f"[{f3(cond['low'])}, {f3(cond['high'])}]"
        by_config = estimators.group_means_interval(x, configs)
        assert int(cell["Configs"]) == by_config["n_groups"] == len(set(configs))
        expected = f"[{f3(by_config['low'])}, {f3(by_config['high'])}]"
        assert cell["95 % CI (configs as a sample)"] == expected
    assert "seed_efficiency" in seen
    assert ("true_efficiency" in seen) == runs["true_efficiency"].notna().any()


@pytest.mark.parametrize("study", ["tr110_study", "full_study"])
def test_every_table_traces_to_parquet_columns(study, request) -> None:
    d = request.getfixturevalue(study)
    appendix = _section(_text(d), "Appendix D: where every table comes from")
    registry = next(t for t in _tables(appendix) if t[0][0] == "Table")
    body = _text(d).split("## Appendix D")[0]
    n_tables = len(_tables(body)) - 1  # the provenance table of input files is not from stats
    assert len(registry) - 2 >= n_tables - 1
    for row in registry[2:]:
        cell = dict(zip(registry[0], row, strict=True))
        path = d / _unescape(cell["File"])
        assert path.exists(), path
        columns = set(pd.read_parquet(path).columns)
        for col in _unescape(cell["Columns"]).split(", "):
            assert col in columns, (path.name, col)


def test_tr110_report_content(tr110_study) -> None:
    text = _text(tr110_study)
    assert "TR110 recorded no solo phase, so true efficiency cannot be computed" in text
    assert "mean efficiency of 93.21 %" in text
    assert "median 98.18 %" in text
    assert "17 of 150 runs flagged" in text
    assert "30 of 30 per-test averages" in text
    tr = _section(text, "TR110 reanalysis")
    assert "opposite of the formula" in tr
    per_test = next(t for t in _tables(tr) if t[0][0] == "Test")
    rows = {r[0]: dict(zip(per_test[0], r, strict=True)) for r in per_test[2:]}
    assert rows["test108"]["Recomputed"] == "1.9850"
    assert rows["test108"]["Recomputed (%)"] == "99.251"
    assert rows["test002"]["Recomputed (%)"] == "73.150"
    assert "disagree" in _section(text, "Reference comparison")
    assert "single topology" in _section(text, "Topology and coordinator comparison")


def test_summary_counts_the_same_reference_claims_as_the_reference_section(tr110_study) -> None:
    text = _text(tr110_study)
    summary = _section(text, "Executive summary")
    said = re.search(r"(\d+) of (\d+) numbers quoted from its text disagree with its own", summary)
    shown = re.search(
        r"disagrees with its own data in (\d+) of (\d+) checked statements",
        _section(text, "Reference comparison"),
    )
    assert said and shown and said.groups() == shown.groups()
    assert re.search(r"(\d+) of (\d+) it quotes about TR110 disagree", summary)
    assert "| configs in the study | " in text and "| Configurations | 27 | n/a | 27 |" in text


def test_full_report_leads_with_true_efficiency(full_study) -> None:
    text = _text(full_study)
    summary = _section(text, "Executive summary")
    first = summary.split("\n- ")[1]
    assert first.startswith("**Against the agents run one after another, each with the whole")
    # interference beside it, in a bullet of its own
    second = summary.split("\n- ")[2]
    assert second.startswith("Interference, each agent alone on its config's own servers")
    assert second.rstrip().endswith("so the two agree.")
    assert "The original formula says" in first
    runs = read_table(full_study / "tables" / "runs.parquet", "runs").to_pandas()
    valid = runs[runs["validity_flags"].fillna("") == ""]
    assert 0 < len(valid) < len(runs)  # the synthetic study has a flagged run
    lead = f"the mean efficiency is {md.fmt_pct(valid['true_efficiency'].mean())}**"
    assert lead in first and f"n = {len(valid)} runs" in first
    assert f"**The original formula says {md.fmt_pct(valid['seed_efficiency'].mean())}**" in first
    beside = f"over all {len(runs)} runs, flagged ones included ({len(runs) - len(valid)}), "
    assert beside + f"true efficiency is {md.fmt_pct(runs['true_efficiency'].mean())}" in first
    assert f"seed efficiency {md.fmt_pct(runs['seed_efficiency'].mean())}." in first
    svt = pd.read_parquet(full_study / "stats" / "seed_vs_true.parquet").iloc[0]
    low, high = svt["config_rank_spearman_low"], svt["config_rank_spearman_high"]
    assert -1 <= low <= svt["config_rank_spearman"] <= high <= 1
    rho = f"Spearman's rho {md.fmt_num(svt['config_rank_spearman'], 2)} (95 % bootstrap interval"
    assert rho in summary and f"{md.fmt_ci(low, high, 2)})." in summary
    assert "not an import of TR110" in _section(text, "TR110 reanalysis")
    assert "figures/run_timeline.png" in text
    assert "figures/topology_comparison.png" in text


def test_validity_section_shows_reloads_both_efficiencies_and_flagged_runs(full_study) -> None:
    text = _section(_text(full_study), "Measurement validity")
    per_config, flagged = _tables(text)[:2]
    rows = {r[0]: dict(zip(per_config[0], r, strict=True)) for r in per_config[2:]}
    shared = rows["test108s"]  # the synthetic shared server reloads 2x alone, 4x concurrently
    assert (shared["Solo reloads"], shared["Concurrent reloads"]) == ("2.00", "4.00")
    assert float(shared["True eff. excl. load (%)"]) > float(shared["True eff. (%)"])
    assert rows["test001"]["True eff. excl. load (%)"] == rows["test001"]["True eff. (%)"]
    runs = read_table(full_study / "tables" / "runs.parquet", "runs").to_pandas()
    first = runs[runs["phase_order"] == "solo,concurrent"]
    assert f"mean true efficiency {md.fmt_pct(first['true_efficiency'].mean())} over" in text
    assert [r[:4] for r in flagged[2:]] == [["test004", "2", "`work_mismatch`", "`insight:1`"]]
    assert "1 of 30 runs generated a different eval_count" in text


def test_results_show_the_headline_over_valid_runs_beside_all_runs(full_study) -> None:
    block = _section(_text(full_study), "Overall results")
    table = _tables(block)[1]
    assert table[0][:4] == ["Metric", "Sample", "n", "Mean"]
    runs = read_table(full_study / "tables" / "runs.parquet", "runs").to_pandas()
    samples = {"valid": runs[runs["validity_flags"].fillna("") == ""], "all": runs}
    shown = [(_unescape(r[0]), r[1]) for r in table[2:]]
    assert shown[:4] == [
        ("seed_efficiency", "valid"),
        ("seed_efficiency", "all"),
        ("true_efficiency", "valid"),
        ("true_efficiency", "all"),
    ]
    for row in table[2:]:
        x = samples[row[1]][_unescape(row[0])].to_numpy(float)
        assert (int(row[2]), row[3]) == (len(x), md.fmt_num(x.mean(), 3))
    assert f"Leaving out the flagged runs ({len(runs) - len(samples['valid'])})" in block


def test_validity_section_shows_order_balanced_estimates_and_drift(full_study) -> None:
    text = _section(_text(full_study), "Measurement validity")
    stats_dir = full_study / "stats"
    balance = pd.read_parquet(stats_dir / "order_balance.parquet")
    true = balance.query("level == 'config' and metric == 'true_efficiency'")
    order_true = _tables(text)[2]
    assert order_true[0][:6] == [
        "Config",
        "Solo first (%)",
        "n",
        "Concurrent first (%)",
        "n",
        "Order-balanced (%)",
    ]
    shown = {r[0]: r[5] for r in order_true[2:]}
    assert shown == {r.group: md.fmt_num(r.balanced_mean, 2) for r in true.itertuples()}
    overall = balance.query("level == 'overall' and metric == 'true_efficiency'").iloc[0]
    assert f"study order effect {md.fmt_signed(overall.order_effect, 2)} pp" in text
    drift = pd.read_parquet(stats_dir / "drift.parquet").set_index("metric")
    drift_table = {r[0].replace("\\", ""): r for r in _tables(text)[4][2:]}
    assert set(drift_table) == {"true_efficiency", "interference_efficiency", "seed_efficiency"}
    for metric, row in drift_table.items():
        assert row[4] == md.fmt_signed(drift.loc[metric, "slope_pp_per_h"], 3)
        assert row[8] == ("yes" if drift.loc[metric, "drift_flagged"] else "no")
    flagged = drift[drift["drift_flagged"]].index
    assert all(f"**Drift flagged ({report.LABELS[m]})**" in text for m in flagged)


def test_model_text_is_escaped(full_study) -> None:
    text = _text(full_study)
    assert "<script>" not in text
    assert "**x**" not in text
    assert "&lt;script&gt;" in text
    assert "\\*\\*x\\*\\*" in text
    # the newline inside the hostile string did not break a table row
    assert "\nnext" not in text
    escaped = md.md_escape(EVIL)
    assert "\n" not in escaped and "<" not in escaped
    assert re.search(r"(?<!\\)\|", escaped) is None


def test_figures_and_captions(tr110_study, full_study) -> None:
    for name in plots.FIGURES:
        assert (ROOT / "report" / "captions" / f"{name}.rst").exists(), name
    made = {e["name"]: e for e in plots.read_manifest(full_study / "figures")}
    scaling_figures = {"scaling_speedup", "scaling_efficiency"}  # no scaling series here
    assert all(e["status"] == "made" for n, e in made.items() if n not in scaling_figures)
    assert all(made[n]["status"] == "skipped" for n in scaling_figures)
    for e in made.values():
        if e["status"] == "made":
            assert (full_study / "figures" / e["file"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    tr = {e["name"]: e for e in plots.read_manifest(tr110_study / "figures")}
    assert tr["run_timeline"]["status"] == "skipped" and "calls" in tr["run_timeline"]["note"]
    assert tr["ttft_split"]["status"] == "skipped"
    assert tr["seed_vs_true"]["status"] == "skipped"
    assert tr["efficiency_distribution"]["status"] == "made"
    assert "not drawn" in _text(tr110_study)


def test_template_change_rerenders_only_the_report(full_study, tmp_path, monkeypatch) -> None:
    templates = tmp_path / "report"
    shutil.copytree(ROOT / "report", templates)
    main = templates / report.TEMPLATE
    main.write_text(main.read_text() + "\nTemplate edited here.\n")
    before = {p: p.stat().st_mtime_ns for p in (full_study / "stats").iterdir()}

    def boom(*a, **k):
        raise AssertionError("statistics recomputed")

    monkeypatch.setattr(stats, "compute_statistics", boom)
    out = report.render_report(
        full_study / "stats",
        full_study / "tables",
        full_study / "figures",
        {},
        tmp_path / "technical_report.md",
        template_dir=templates,
    )
    assert out.read_text().rstrip().endswith("Template edited here.")
    assert before == {p: p.stat().st_mtime_ns for p in (full_study / "stats").iterdir()}
    # figure links are relative to the report's own folder
    assert os.path.relpath(full_study / "figures", tmp_path) in out.read_text()
    assert report.template_files(templates)


def test_report_renders_from_statistics_written_before_the_new_tables(full_study, tmp_path):
    """A study's stats folder from before the order, drift, headline and SLO-attainment
    tables (Snakemake keeps it while the tables are unchanged) still renders."""
    old = tmp_path / "stats"
    shutil.copytree(full_study / "stats", old)
    summary = json.loads((old / "summary.json").read_text())
    for name in ("order_balance", "drift", "headline_runs", "slo_attainment"):
        (old / summary["files"].pop(name)["file"]).unlink()
    dropped = {
        "slo": ["test", "bound", "failure_shown"],
        "seed_vs_true": ["config_rank_spearman_low", "config_rank_spearman_high"],
        "latency": ["p99_lower_95", "p99_lower_rank"],
    }
    for name, columns in dropped.items():
        path = old / summary["files"][name]["file"]
        pd.read_parquet(path).drop(columns=columns).to_parquet(path)
    (old / "summary.json").write_text(json.dumps(summary))
    out = report.render_report(
        old, full_study / "tables", full_study / "figures", {}, tmp_path / "technical_report.md"
    )
    text = out.read_text()
    assert "### Phase order: order-balanced" not in text and "Leaving out the flagged" not in text
    assert "(point estimate)" in _section(text, "Executive summary")


def test_small_study_without_reference(tmp_path) -> None:
    f = build(seed=4, runs=1)
    runs = f["runs"][f["runs"].config_id == "test004"]
    agents = f["agents"][f["agents"].config_id == "test004"]
    calls = f["calls"][f["calls"].config_id == "test004"]
    s = stats.compute_statistics(runs, agents, calls, {"study": "tiny"})
    plots.make_figures(runs, agents, calls, s, tmp_path / "figures")
    out = report.render_report(
        s, None, tmp_path / "figures", {"title": "Tiny"}, tmp_path / "technical_report.md"
    )
    text = out.read_text()
    for heading in report.SECTIONS:
        assert f"## {heading}" in text
    assert "names no reference dataset" in text
    assert "single scenario" in _section(text, "Statistical deep dive")
    assert not re.search(r"\bnan\b", text, re.IGNORECASE)
    assert "It is the scenario's only config." in text


def test_markdown_formatting() -> None:
    assert md.fmt_num(None) == "n/a" and md.fmt_num(float("nan")) == "n/a"
    assert md.fmt_num(-0.0001, 2) == "0.00"
    assert md.fmt_pct(93.2139) == "93.21 %"
    assert md.fmt_ci(1, None) == "n/a" and md.fmt_ci(1, 2, 1) == "[1.0, 2.0]"
    assert md.fmt_p(0.0001) == "< 0.001" and md.fmt_p(0.04123) == "0.041"
    assert md.fmt_signed(1.234, 1) == "+1.2"
    assert md.fmt_value(27.0, "count3") == "27" and md.fmt_value(-25.0, "count3") == "-25"
    assert md.fmt_value(98.9342, "count3") == "98.934" and md.fmt_value(None, "count3") == "n/a"
    assert md.fmt_code("a`b|c") == "`a'b\\|c`"
    assert md.md_escape("a_b*c") == "a\\_b\\*c"
    assert md.md_table([], [("A", "a", "text")]) == "_No rows._"
    t = md.md_table(
        [{"a": "x|y", "lo": 1.0, "hi": 2.0}], [("A", "a", "text"), ("CI", "lo..hi", "num1")]
    )
    assert t.splitlines()[2] == "| x\\|y | [1.0, 2.0] |"
    with pytest.raises(ValueError):
        md.fmt_value(1, "weird")


def test_full_report_shows_tail_latency_and_cites_unit_and_test(full_study) -> None:
    text = _text(full_study)
    latency = _section(text, "Latency distributions")
    (overall, *_rest) = _tables(latency)
    assert overall[0][:3] == ["Phase", "Metric", "Calls"] and "P99 (ms)" in overall[0]
    assert {r[1] for r in overall[2:]} == {"TTFT", "ITL", "TPOT", "end-to-end"}
    assert "SLO attainment (% of calls)" in latency and "figures/latency.png" in latency
    assert "good calls per second" in latency and "Good calls per second" in latency
    summary = _section(text, "Executive summary")
    assert "with the config as the unit (Welch t on config means" in summary
    assert "inter-token latency P50" in summary
    assert "tested against its runner-up (Welch t" in summary
    slo = pd.read_parquet(full_study / "stats" / "slo.parquet").query("scope == 'all'")
    for r in slo.itertuples():  # every SLO verdict says whether a test or a point estimate
        label = "(point estimate)" if r.test == "point estimate" else f"the test: {r.test},"
        assert re.search(
            rf"- SLO {re.escape(md.md_escape(r.check))}: .*{re.escape(label)}", summary
        )
    for inference in ("CIs overlap", "CIs do not overlap", "CIs separate", "defensible choice"):
        assert inference not in text  # nothing is inferred from overlapping intervals
    method = _section(text, "Methodology")
    assert "on normal data" in method and "lognormal (sigma 1) data" in method


def test_tr110_conclusions_rest_on_config_means(tr110_study) -> None:
    text = _text(tr110_study)
    summary = _section(text, "Executive summary")
    assert "Welch t on config means" in summary
    assert "on the 27 configs both studies have" in summary
    assert "TR110 recorded no per-call times" in _section(text, "Latency distributions")
    (scen,) = [t for t in _tables(_section(text, "Scenario breakdown")) if t[0][0] == "Scenario"]
    assert scen[0][2:5] == ["Configs", "Runs", "Mean of config means"]
    assert "intraclass correlation of seed efficiency (%) between runs of one config is 0.77" in (
        _section(text, "Methodology")
    )


def test_outliers_table_shows_the_twenty_furthest_and_points_to_all(full_study, tmp_path) -> None:
    d = tmp_path / "full"
    shutil.copytree(full_study, d)
    path = d / "stats" / "outliers.parquet"
    one = pd.read_parquet(path).iloc[[0]]
    many = pd.concat([one] * 45, ignore_index=True)
    many["run_index"] = range(1, 46)
    many["distance"] = [float(i) for i in range(1, 46)]
    many.to_parquet(path)
    report.build(d, {"reference": ["tr114"], "study": "full", "title": "full report"})
    block = _section(_text(d), "Worst outliers")
    assert "45 runs lie outside the IQR fences" in block
    assert "(the 20 furthest; all 45 are in `stats/outliers.parquet`)" in block
    shown = next(t for t in _tables(block) if t[0][:3] == ["Config", "Scenario", "Run"])
    assert [r[2] for r in shown[2:]] == [str(i) for i in range(45, 25, -1)]


def test_every_heading_stands_after_a_blank_line(full_study, tr110_study) -> None:
    for study in (full_study, tr110_study):
        lines = _text(study).splitlines()
        glued = [
            f"{i}: {line}"
            for i, line in enumerate(lines)
            if line.startswith("#") and i > 0 and lines[i - 1].strip()
        ]
        assert not glued, (study.name, glued[:3])
