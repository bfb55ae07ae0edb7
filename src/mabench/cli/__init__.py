"""The ``mabench`` command line: one subcommand per module.

Owns the entry point (``main``: ``mabench <command>``, importing only the chosen command's
module), ``mabench run`` (``run``: one config × run outside Snakemake), ``mabench check``
(``check``: servers you already run, through a generated study) and ``mabench doctor``
(``doctor``: the embedded model really generates on this CPU). ``mabench serve`` and
``sim-serve`` live with their servers.

May import: every other ``mabench`` package. Nothing imports it.
"""
