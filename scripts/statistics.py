"""Rule `statistics`: runs/agents/calls tables -> results/<study>/stats/ (mabench.analysis.stats)."""

from mabench.analysis import stats
from mabench.steps import legacy, rules

sm = snakemake  # noqa: F821 (injected by Snakemake)
with rules.script_logging(sm.log[0]):
    tables = {name: sm.input[name] for name in ("runs", "agents", "calls", "failures")}
    stats.run(tables, sm.output[0], sm.params.settings, legacy=legacy.legacy_data)
