# Measurement, per config: server start-up -> forced unload -> one job per run.
# Server start-up starts the study's servers on this host (or reuses the ones this
# invocation already runs) and checks the config's servers; its description is temporary,
# so a later invocation starts servers again whenever a run must be measured. Servers stop
# when the workflow ends, fails or is interrupted (and with their owner process, always).


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
