# Measurement, per config: server start-up -> forced unload -> one job per run.
# Server start-up starts the study's servers on this host (or reuses the ones this
# invocation already runs) and checks the config's servers; its description is temporary,
# so a later invocation starts servers again whenever a run must be measured. Servers stop
# when the workflow ends, fails or is interrupted (and with their owner process, always).
#
# On a cluster (profiles/slurm) a config's start_servers and unload are one job, and each run
# is a job of its own, which starts the config's servers on its node (the pool starts a server
# that is not up) and whose first Snakemake owns them, so they stop when the job ends (or is
# cancelled). A run record is its own job's only output: a later failure of any job leaves it
# in place. See docs/cluster.md.


# bench_slot: one measurement at a time. Servers the pool starts (embedded, ollama) live on
# the node that measures, so each cluster job has its own slot ("local"); external servers are
# shared by every node, so theirs is one for the whole cluster ("global"). On one machine both
# mean one at a time.
resource_scopes:
    bench_slot="global" if STUDY.backend_kind == "external" else "local",


# A job's own Snakemake (inside a cluster job) gets no profile and no --resources: the slot
# is declared here unless the command line gave one.
if "bench_slot" not in workflow.global_resources:
    workflow.register_resource("bench_slot", 1)


# A cluster's submitting Snakemake never resubmits a run's job: a failed run is retried inside
# its job, on the node and with the servers that measured it, by the job's own Snakemake
# (`retries` of rule run), so each attempt's failure report names one node. A run whose job
# still fails is measured by the next invocation. (onstart: the executor is known only once
# the workflow is parsed.)
onstart:
    if workflow.non_local_exec:
        workflow.get_rule("run").restart_times = 0


rule start_servers:
    output:
        temp("results/{study}/servers/{config}.json"),
    log:
        "results/{study}/logs/start_servers/{config}.log",
    conda:
        "../../envs/mabench.yaml"
    resources:
        bench_slot=1,
    script:
        "../../scripts/start_servers.py"


rule unload:
    input:
        servers="results/{study}/servers/{config}.json",
    output:
        "results/{study}/unload/{config}.json",
    log:
        "results/{study}/logs/unload/{config}.log",
    conda:
        "../../envs/mabench.yaml"
    resources:
        bench_slot=1,
    script:
        "../../scripts/unload.py"


rule run:
    input:
        unload="results/{study}/unload/{config}.json",
    output:
        "results/{study}/runs/{config}/run_{run}.json",
    log:
        "results/{study}/logs/runs/{config}/run_{run}.log",
    retries: STUDY.retries
    conda:
        "../../envs/mabench.yaml"
    resources:
        bench_slot=1,
        attempt=attempt_number,
    params:
        fingerprint=measurement_fingerprint,
    script:
        "../../scripts/run.py"


# Opt-in (not part of `all`): snakemake pull_models --configfile <ollama study>.yaml
rule pull_models:
    output:
        f"results/{STUDY.name}/pulled.json",
    log:
        f"results/{STUDY.name}/logs/pull_models.log",
    conda:
        "../../envs/mabench.yaml"
    script:
        "../../scripts/pull_models.py"
