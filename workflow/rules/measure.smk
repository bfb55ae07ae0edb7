# Measurement: the forced unload per config, then one job per config x run.
# Servers are started by the first job that needs them and stopped when the workflow ends.


rule unload:
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
