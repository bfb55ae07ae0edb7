"""Rule `start_servers`: start (or reuse) the study's servers and describe a config's servers."""

from mabench import pipeline

sm = snakemake  # noqa: F821 (injected by Snakemake)
with pipeline.script_logging(sm.log[0]):
    study = pipeline.load(sm.config)
    paths = pipeline.StudyPaths.of(study.name)
    pipeline.start_servers_step(study, sm.wildcards.config, sm.output[0], paths)
