# Legacy datasets: import instead of measuring; the same tables feed the same report.


rule import_tr110:
    output:
        runs="results/{study}/tables/runs.parquet",
        agents="results/{study}/tables/agents.parquet",
        calls="results/{study}/tables/calls.parquet",
        failures="results/{study}/tables/failures.parquet",
    log:
        "results/{study}/logs/import.log",
    conda:
        "../../envs/mabench.yaml"
    params:
        source=lambda wildcards: STUDY.import_["path"],
    script:
        "../../scripts/import_tr110.py"
