"""Rule `report`: statistics + figures -> results/<study>/technical_report.md (mabench.analysis.report)."""

from pathlib import Path

from mabench import pipeline
from mabench.analysis import report

sm = snakemake  # noqa: F821 (injected by Snakemake)
with pipeline.script_logging(sm.log[0]):
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
