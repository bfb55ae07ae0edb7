"""Rule `aggregate`: run records -> runs/agents/calls/failures Parquet tables.

Every input is checked first (mabench.analysis.integrity). A refused one stops the rule with
one message naming every offending file, in the rule's log (shown on the terminal by
--show-failed-logs). A failure report left out because it cannot be read is said in the log
and on the terminal.
"""

import logging
import sys
from pathlib import Path

from mabench.analysis.aggregate import aggregate
from mabench.analysis.integrity import Expected, IntegrityError
from mabench.steps import rules

sm = snakemake  # noqa: F821 (injected by Snakemake)
paths = rules.StudyPaths.of(sm.wildcards.study)
expected = Expected(
    study=sm.wildcards.study,
    config_hashes=dict(sm.params.config_hashes),
    unload_files={c: paths.unload(c) for c in sm.params.config_hashes},
)
# Warnings also go to the terminal (this script's stderr is Snakemake's): a successful job's
# log is not shown. Errors are in the log, which Snakemake shows when the job fails.
terminal = logging.StreamHandler(sys.__stderr__)
terminal.addFilter(lambda record: record.levelno == logging.WARNING)
logging.getLogger("mabench").addHandler(terminal)
with rules.script_logging(sm.log[0], refusals=(IntegrityError,)):
    aggregate(
        sm.input.records,
        Path(sm.output.runs).parent,
        failures_dir=sm.params.failures_dir,
        expected=expected,
        workers=sm.threads,
    )
