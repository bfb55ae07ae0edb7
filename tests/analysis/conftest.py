"""Fixtures for the statistics/report tests: the TR110 import and a synthetic full study,
each built once per session into a results/<study>/ layout (tables, stats, figures, report)."""

from __future__ import annotations

from pathlib import Path

import pytest
import synthetic

from mabench.analysis import plots, report, stats
from mabench.datasets import tr110
from mabench.steps import legacy

SETTINGS = {
    "reference": ["tr114"],
    "methodology": {
        "protocol": "solo phase, then concurrent phase | **bold**",
        "workload": {"collector": [{"prompt": "collector_analyse.md.j2", "num_predict": 40}]},
    },
}


def build_study(root: Path, study: str, settings: dict) -> Path:
    d = root / study
    if study == "tr110":
        tr110.import_tr110(None, d / "tables", study=study)
    else:
        synthetic.write(d / "tables", evil=True)
    settings = {**settings, "study": study, "title": f"{study} report"}
    stats.run(d / "tables", d / "stats", settings, legacy=legacy.legacy_data)
    plots.run(d / "tables", d / "stats", d / "figures")
    report.build(d, settings)
    return d


@pytest.fixture(scope="session")
def tr110_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_study(tmp_path_factory.mktemp("results"), "tr110", SETTINGS)


@pytest.fixture(scope="session")
def full_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_study(tmp_path_factory.mktemp("results"), "full", SETTINGS)
