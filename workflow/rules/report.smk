# The technical report: Jinja templates in report/ rendered with the statistics and figures.
# The templates are inputs, so editing one re-renders the report and nothing else.


rule report:
    input:
        stats="results/{study}/stats",
        figures="results/{study}/figures",
        tables="results/{study}/tables/runs.parquet",
        hosts="results/{study}/hosts",
        template=os.path.join(TEMPLATE_DIR, "technical_report.md.j2"),
        partials=REPORT_TEMPLATES,
    output:
        report(
            "results/{study}/technical_report.md",
            caption="../../report/captions/technical_report.rst",
            category="Technical report",
        ),
    log:
        "results/{study}/logs/report.log",
    conda:
        "../../envs/mabench.yaml"
    params:
        settings=REPORT_SETTINGS,
    script:
        "../../scripts/report.py"
