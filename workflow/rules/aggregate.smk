# Run records -> Parquet tables (schemas in src/mabench/analysis/tables.py, docs/outputs.md).


rule aggregate:
    input:
        records=run_records(),
    # update(): Snakemake keeps the tables already there until the step succeeds, so a refused
    # input (mabench.analysis.integrity) leaves them as they were. inputs.json (the records
    # the tables hold) is an ordinary output: missing after a refusal, so the next invocation
    # checks, and refuses, again.
    output:
        runs=update("results/{study}/tables/runs.parquet"),
        agents=update("results/{study}/tables/agents.parquet"),
        calls=update("results/{study}/tables/calls.parquet"),
        failures=update("results/{study}/tables/failures.parquet"),
        inputs="results/{study}/tables/inputs.json",
    log:
        "results/{study}/logs/aggregate.log",
    conda:
        "../../envs/mabench.yaml"
    # records are read by one worker process per thread (mabench.analysis.aggregate)
    threads: workflow.cores
    params:
        failures_dir="results/{study}/failures",
        # each config's fingerprint now: a record measured under other options is refused
        config_hashes={c: STUDY.config_hash(c) for c in STUDY.config_ids},
    script:
        "../../scripts/aggregate.py"
