"""Rule `report`: statistics + figures -> results/<study>/technical_report.md (mabench.analysis.report)."""

from pathlib import Path

from mabench.analysis import report
from mabench.steps import rules

sm = snakemake  # noqa: F821 (injected by Snakemake)
with rules.script_logging(sm.log[0]):
    tables = Path(sm.input.tables).parent
    report.render_report(
        sm.input.stats,
        tables,
        sm.input.figures,
        sm.params.settings,
        sm.output[0],
        template_dir=Path(sm.input.template).parent,
        hosts_dir=sm.input.hosts,
    )
