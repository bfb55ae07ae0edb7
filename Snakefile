# mabench: concurrent multi-agent LLM benchmark, reproducing and correcting TR114.
#
#   snakemake                                            # the full study (config.yaml)
#   snakemake --configfile workflow/studies/smoke.yaml   # another study, self-contained
#
# DAG: start_servers -> unload (per config) -> run (per config x run)
#      -> aggregate -> statistics -> figures -> technical report.
import os

from snakemake.utils import min_version

min_version("9.0")


# A study file given with --configfile replaces config.yaml instead of merging into it.
if not workflow.overwrite_configfiles:

    configfile: os.path.join(workflow.basedir, "config.yaml")


include: "workflow/rules/common.smk"


if STUDY.imported:

    include: "workflow/rules/import.smk"

    localrules:
        import_tr110,

else:

    include: "workflow/rules/measure.smk"
    include: "workflow/rules/aggregate.smk"

    localrules:
        aggregate,


include: "workflow/rules/analysis.smk"
include: "workflow/rules/hosts.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        all_targets(),


# On a cluster only the measurement is submitted; the rest runs where snakemake runs.
localrules:
    all,
    statistics,
    figures,
    hosts,
    report,
