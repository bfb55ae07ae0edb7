# Run records -> Parquet tables (schemas in src/mabench/tables.py, documented in the README).


rule aggregate:
    input:
        records=run_records(),
    output:
        runs=OUT + "/tables/runs.parquet",
        agents=OUT + "/tables/agents.parquet",
        calls=OUT + "/tables/calls.parquet",
        failures=OUT + "/tables/failures.parquet",
    log:
        OUT + "/logs/aggregate.log",
    params:
        failures_dir=OUT + "/failures",
    conda:
        "../../envs/mabench.yaml"
    script:
        "../../scripts/aggregate.py"
