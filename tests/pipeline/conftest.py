"""Pipeline tests drive the real Snakemake and, for measured studies, the real embedded server."""

from __future__ import annotations

import shutil

import pytest
from snake import ROOT, STUDIES, snakemake


@pytest.fixture(scope="session")
def smoke_dir(tmp_path_factory):
    """A working directory in which the smoke study ran to completion (about a minute).

    The report templates are a private copy (MABENCH_REPORT_TEMPLATES), so tests may edit them.
    """
    workdir = tmp_path_factory.mktemp("smoke")
    templates = workdir / "templates"
    shutil.copytree(ROOT / "report", templates)
    mp = pytest.MonkeyPatch()
    mp.setenv("MABENCH_REPORT_TEMPLATES", str(templates))
    proc = snakemake(workdir, configfile=STUDIES / "smoke.yaml", check=True)
    yield workdir, proc
    mp.undo()
