"""Rule `run`: measure one config x run into one run record (mabench.measure)."""

from mabench import pipeline

with pipeline.script_logging(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    sm = snakemake  # noqa: F821
    study = pipeline.load(sm.config)
    pipeline.run_step(
        study,
        sm.wildcards.config,
        int(sm.wildcards.run),
        sm.output[0],
        pipeline.StudyPaths.of(study.name),
        attempt=int(sm.resources.attempt),
    )
