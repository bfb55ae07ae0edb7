"""Rule `import_tr110`: the TR110 result layout -> runs/agents/calls Parquet tables.

A folder that is not the layout the importer reads stops the rule with one message naming
every offending file (in the rule's log, shown on the terminal by --show-failed-logs).
"""

from pathlib import Path

from mabench.analysis.tables import write_empty_failures
from mabench.datasets.tr110 import LayoutError, import_tr110
from mabench.steps import rules

sm = snakemake  # noqa: F821 (injected by Snakemake)
with rules.script_logging(sm.log[0], refusals=(LayoutError,)):
    import_tr110(sm.params.source, Path(sm.output.runs).parent, study=sm.wildcards.study)
    write_empty_failures(sm.output.failures)
