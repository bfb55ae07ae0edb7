# Measurement: the forced unload per config, then one job per config x run.
# Servers are started by the first job that needs them and stopped when the workflow ends.


rule unload:
    output:
        OUT + "/unload/{config}.json",
    log:
        OUT + "/logs/unload/{config}.log",
    params:
        base_dir=CONFIG_DIR,
    resources:
        bench_slot=1,
    conda:
        "../../envs/mabench.yaml"
    script:
        "../../scripts/unload.py"


rule run:
    input:
        unload=OUT + "/unload/{config}.json",
    output:
        OUT + "/runs/{config}/run_{run}.json",
    log:
        OUT + "/logs/runs/{config}/run_{run}.log",
    params:
        base_dir=CONFIG_DIR,
        fingerprint=measurement_fingerprint,
    resources:
        bench_slot=1,
        attempt=attempt_number,
    retries: STUDY.retries
    conda:
        "../../envs/mabench.yaml"
    script:
        "../../scripts/run.py"
