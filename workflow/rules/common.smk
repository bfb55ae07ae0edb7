# Shared set-up: validate the study config, type it, and define paths and target lists.
import os
import re
from pathlib import Path

from snakemake.exceptions import WorkflowError

from mabench.config import ConfigError, absolutize, study_from_dict
from mabench.steps.rules import StudyPaths, pool_for, release_servers, report_settings
from mabench.analysis.templates import template_files
from mabench.servers.ownership import claim_ownership

# Relative paths in a study file (prompts, GGUF files, corpus) are relative to that file;
# jobs get them absolute, so nothing depends on the working directory.
_given = workflow.overwrite_configfiles
config.update(
    absolutize(config, Path(_given[-1]).parent if _given else workflow.basedir)
)

# The one check of the config: its schema (config.schema.yaml), then the cross-references.
# Every message names the key (configs[3].options.insight.num_ctx). Jobs build the same study
# from the same config without checking the schema again (mabench.steps.rules.load).
try:
    STUDY = study_from_dict(config, source="study config")
except ConfigError as exc:
    raise WorkflowError(
        f"{exc}\nNothing was run; fix the config and try again."
    ) from None

PATHS = StudyPaths.of(STUDY.name)  # results/<study>/...
REPORT_SETTINGS = report_settings(STUDY)
# Report templates: report/ of this checkout, or your own copy (MABENCH_REPORT_TEMPLATES).
TEMPLATE_DIR = os.path.relpath(
    os.environ.get("MABENCH_REPORT_TEMPLATES")
    or os.path.join(workflow.basedir, "report")
)
REPORT_TEMPLATES = [os.path.relpath(p) for p in template_files(TEMPLATE_DIR)]
RUN_IDS = [str(i) for i in range(1, STUDY.runs + 1)]

# Servers started by jobs of this invocation live exactly as long as this process (in a
# cluster job: as long as the job's first Snakemake, see claim_ownership). Claimed here, at
# parse time, and not in onstart: Snakemake runs a job's own Snakemake (the one that must own
# its node's servers in a cluster job) with --no-hooks, so no handler ever runs there. The
# claim sets two variables of this process's environment, which only the jobs it starts
# inherit: it starts nothing and writes nothing (snakemake -n, --dag, --lint stay inert).
claim_ownership(invocation=workflow.is_main_process)

# A study that still has runs to measure must be able to start its servers: say so now,
# before any job runs, rather than in the middle of the study. Read-only: it reads the pool's
# state and binds nothing it keeps (mabench.servers.pool.ServerPool.preflight).
if not STUDY.imported and not all(
    PATHS.record(c, r).exists() for c in STUDY.config_ids for r in RUN_IDS
):
    _problems = pool_for(STUDY, PATHS).preflight()
    if _problems:
        raise WorkflowError("\n".join(_problems) + "\nNothing was run.")


wildcard_constraints:
    study=re.escape(STUDY.name),
    config="|".join(re.escape(c) for c in STUDY.config_ids) or "NONE",
    run=r"[0-9]+",


def run_records():
    """Every run record of the study: one per config x run."""
    return expand(
        "results/{study}/runs/{config}/run_{run}.json",
        study=STUDY.name,
        config=STUDY.config_ids,
        run=RUN_IDS,
    )


def measurement_fingerprint(wildcards):
    """Changes when anything that a run of this config measures changes (and only then)."""
    return STUDY.config_hash(wildcards.config)


def figure_captions():
    """Figure name -> caption text (report/captions/<name>.rst), for snakemake --report."""
    return {
        Path(p).stem: Path(p).read_text(encoding="utf-8")
        for p in REPORT_TEMPLATES
        if p.endswith(".rst") and Path(p).parent.name == "captions"
    }


def attempt_number(wildcards, attempt):
    return attempt


def all_targets():
    targets = [f"results/{STUDY.name}/technical_report.md"]
    if not STUDY.imported:
        # inputs.json, the aggregate's list of the records it checked, is missing after a
        # refused aggregate: as a target, it makes every later invocation check again.
        targets += run_records() + [f"results/{STUDY.name}/tables/inputs.json"]
    return targets


onsuccess:
    release_servers(STUDY, PATHS)


onerror:
    release_servers(STUDY, PATHS)
