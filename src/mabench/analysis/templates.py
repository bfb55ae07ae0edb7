"""Where the report's templates are, and which files they are (the report rule's inputs).

Light on purpose: the Snakefile lists the templates when it parses the workflow, and importing
the report (figures, statistics) would cost every invocation seconds.
"""

from __future__ import annotations

import os
from pathlib import Path

TEMPLATE = "technical_report.md.j2"


def default_template_dir() -> Path:
    """``$MABENCH_REPORT_TEMPLATES``, else ``./report``, else the project checkout's
    ``report/`` (beside ``src/``)."""
    env = os.environ.get("MABENCH_REPORT_TEMPLATES")
    candidates = [Path(env)] if env else []
    candidates += [Path.cwd() / "report", Path(__file__).resolve().parents[3] / "report"]
    for c in candidates:
        if (c / TEMPLATE).exists():
            return c
    raise FileNotFoundError(f"no {TEMPLATE} in {', '.join(map(str, candidates))}")


def template_files(template_dir: str | Path | None = None) -> list[Path]:
    """Every template and caption file (inputs of the report rule)."""
    d = Path(template_dir) if template_dir else default_template_dir()
    return sorted(p for p in d.rglob("*") if p.is_file() and p.suffix in {".j2", ".rst"})
