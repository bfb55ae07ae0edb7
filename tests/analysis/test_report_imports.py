"""The report job reads saved statistics and figures: importing it costs no scipy or matplotlib.

(What the analysis package may import is a contract in pyproject.toml, checked by
tests/test_layering.py.)
"""

from __future__ import annotations

import subprocess
import sys


def test_the_report_reads_statistics_and_figures_without_scipy_or_matplotlib() -> None:
    # The report job renders from saved files: importing it must not pay for the libraries
    # that only computing statistics (scipy) and drawing figures (matplotlib) need.
    probe = (
        "import sys, mabench.analysis.report, mabench.analysis.stats as s; s.load_statistics; "
        "print(sorted(m for m in ('scipy', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
