"""The analysis package keeps to the imports its __init__ allows (checked on the source)."""

from __future__ import annotations

import ast
from pathlib import Path

import mabench.analysis

ANALYSIS = Path(mabench.analysis.__file__).parent


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


def test_analysis_never_imports_datasets_or_servers() -> None:
    files = sorted(ANALYSIS.rglob("*.py"))
    assert len(files) > 10
    for path in files:
        bad = sorted(
            m
            for m in _imports(path)
            if m.startswith(("mabench.datasets", "mabench.servers"))
            or m in ("mabench.steps.legacy", "mabench.steps.rules")
        )
        assert not bad, f"{path.relative_to(ANALYSIS)} imports {bad}"


def test_the_report_reads_statistics_and_figures_without_scipy_or_matplotlib() -> None:
    # The report job renders from saved files: importing it must not pay for the libraries
    # that only computing statistics (scipy) and drawing figures (matplotlib) need.
    import subprocess
    import sys

    probe = (
        "import sys, mabench.analysis.report, mabench.analysis.stats as s; s.load_statistics; "
        "print(sorted(m for m in ('scipy', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
