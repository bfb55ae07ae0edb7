"""Rule `unload`: forced unload of every model on every server before a config's runs."""

from mabench import pipeline

sm = snakemake  # noqa: F821 (injected by Snakemake)
with pipeline.script_logging(sm.log[0]):
    study = pipeline.load(sm.config)
    paths = pipeline.StudyPaths.of(study.name)
    pipeline.unload_step(study, sm.wildcards.config, sm.output[0], paths, sm.input.servers)
