"""The legacy datasets as the statistics need them: the glue between ``datasets`` and ``analysis``.

Statistics never imports a dataset module; the statistics rule (and the tests) build the
reference comparisons and the TR110 reanalysis here and pass them in as
:class:`~mabench.analysis.stats.LegacyData`. A module of its own, not part of
:mod:`mabench.steps.rules`, because the Snakefile imports that one at parse time and these imports
(pandas, scipy, the datasets) would add about a second to every parse.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from mabench.analysis.stats import LegacyData
from mabench.datasets import tr110
from mabench.datasets.reference import reference_tables


def legacy_data(runs: pd.DataFrame, settings: Mapping[str, Any]) -> LegacyData:
    """What the statistics need from the legacy datasets for these runs and resolved settings:
    the TR110 reanalysis and methodology when the runs are TR110's, and the comparison with
    every reference the settings name (TR114's claims about TR110 are checked on TR110's runs,
    the bundled ones when the study did not import them)."""
    tr110_runs = runs[runs["source"] == "tr110"] if "source" in runs else runs.iloc[0:0]
    reanalysis: dict[str, pd.DataFrame] = {}
    methodology: dict[str, str] = {}
    if not tr110_runs.empty:
        reanalysis = tr110.reanalyse(tr110_runs, settings.get("tr110_dir"))
        methodology = dict(tr110.METHODOLOGY)
    references = list(settings.get("reference") or [])
    reference: dict[str, pd.DataFrame] = {}
    if references:
        if tr110_runs.empty and "tr114" in references:
            tr110_runs = tr110.frames()["runs"]
        reference = reference_tables(runs, references, tr110_runs)
    return LegacyData(reference=reference, tr110=reanalysis, methodology=methodology)


__all__ = ["legacy_data"]
