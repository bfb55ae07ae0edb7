# Runs by host and hardware, for the report's "Hosts and hardware" section (shown when a study
# spans hosts or a config's runs were measured on different hardware).


rule hosts:
    input:
        runs="results/{study}/tables/runs.parquet",
    output:
        directory("results/{study}/hosts"),
    log:
        "results/{study}/logs/hosts.log",
    conda:
        "../../envs/mabench.yaml"
    script:
        "../../scripts/hosts.py"
