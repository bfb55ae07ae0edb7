"""Rule `run`: measure one config x run into one run record (mabench.run_job)."""

from mabench import pipeline

sm = snakemake  # noqa: F821 (injected by Snakemake)
with pipeline.script_logging(sm.log[0]):
    study = pipeline.load(sm.config)
    paths = pipeline.StudyPaths.of(study.name)
    attempt = int(sm.resources.attempt)
    pipeline.run_step(
        study, sm.wildcards.config, int(sm.wildcards.run), sm.output[0], paths, attempt
    )
