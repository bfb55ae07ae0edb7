# Run records -> Parquet tables (schemas in src/mabench/tables.py, documented in the README).


rule aggregate:
    input:
        records=run_records(),
    output:
        runs="results/{study}/tables/runs.parquet",
        agents="results/{study}/tables/agents.parquet",
        calls="results/{study}/tables/calls.parquet",
        failures="results/{study}/tables/failures.parquet",
    log:
        "results/{study}/logs/aggregate.log",
    conda:
        "../../envs/mabench.yaml"
    # records are read by one worker process per thread (mabench.analysis.aggregate)
    threads: workflow.cores
    params:
        failures_dir="results/{study}/failures",
    script:
        "../../scripts/aggregate.py"
