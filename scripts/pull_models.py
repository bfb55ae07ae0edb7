"""Rule `pull_models` (opt-in): pull the study's models into the Ollama servers' store."""

from mabench.steps import rules

sm = snakemake  # noqa: F821 (injected by Snakemake)
with rules.script_logging(sm.log[0]):
    study = rules.load(sm.config)
    rules.pull_step(study, sm.output[0], rules.StudyPaths.of(study.name))
