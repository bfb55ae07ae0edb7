"""Rule `figures`: tables + statistics -> results/<study>/figures/*.png (mabench.analysis.plots)."""

from mabench.analysis import plots
from mabench.steps import rules

sm = snakemake  # noqa: F821 (injected by Snakemake)
with rules.script_logging(sm.log[0]):
    tables = {"runs": sm.input.runs, "agents": sm.input.agents, "calls": sm.input.calls}
    plots.run(tables, sm.input.stats, sm.output[0])
