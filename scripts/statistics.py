"""Rule `statistics`: runs/agents/calls tables -> results/<study>/stats/ (mabench.analysis.stats)."""

from mabench import legacy, pipeline
from mabench.analysis import stats

sm = snakemake  # noqa: F821 (injected by Snakemake)
with pipeline.script_logging(sm.log[0]):
    tables = {name: sm.input[name] for name in ("runs", "agents", "calls", "failures")}
    stats.run(tables, sm.output[0], sm.params.settings, legacy=legacy.legacy_data)
