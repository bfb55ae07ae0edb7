"""Rule `pull_models` (opt-in): pull the study's models into the Ollama servers' store."""

from mabench import pipeline

sm = snakemake  # noqa: F821 (injected by Snakemake)
with pipeline.script_logging(sm.log[0]):
    study = pipeline.load(sm.config)
    pipeline.pull_step(study, sm.output[0], pipeline.StudyPaths.of(study.name))
