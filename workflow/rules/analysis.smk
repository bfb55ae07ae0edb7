# Tables -> statistics -> figures. Only the analysis settings are parameters here, so a
# change of title, cost model or SLO targets re-runs the analysis, never a measurement.


rule statistics:
    input:
        runs="results/{study}/tables/runs.parquet",
        agents="results/{study}/tables/agents.parquet",
        calls="results/{study}/tables/calls.parquet",
        failures="results/{study}/tables/failures.parquet",
    output:
        directory("results/{study}/stats"),
    log:
        "results/{study}/logs/statistics.log",
    conda:
        "../../envs/mabench.yaml"
    params:
        settings=REPORT_SETTINGS,
    script:
        "../../scripts/statistics.py"


rule figures:
    input:
        runs="results/{study}/tables/runs.parquet",
        agents="results/{study}/tables/agents.parquet",
        calls="results/{study}/tables/calls.parquet",
        stats="results/{study}/stats",
    output:
        report(
            directory("results/{study}/figures"),
            patterns=["{name}.png"],
            caption="../../report/captions/figure.rst",
            category="Figures",
        ),
    log:
        "results/{study}/logs/figures.log",
    conda:
        "../../envs/mabench.yaml"
    params:
        captions=figure_captions(),
    script:
        "../../scripts/figures.py"
