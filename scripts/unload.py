"""Rule `unload`: forced unload of every model on every server before a config's runs."""

from mabench import pipeline

with pipeline.script_logging(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    study = pipeline.load(snakemake.config)  # noqa: F821
    paths = pipeline.StudyPaths.of(study.name)
    pipeline.unload_step(study, snakemake.wildcards.config, snakemake.output[0], paths)  # noqa: F821
