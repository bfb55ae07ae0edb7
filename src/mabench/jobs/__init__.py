"""Rule jobs without the interpreter's start-up: a job host forks one child per job.

A measurement job is a new Python process that imports the harness (about a third of a
second on a 2-core machine) to do ten seconds of work: across the full study that is most
of what is spent outside the measured phases. The job host (``host``) is one process per
Snakemake invocation and host machine, started with the study's servers and stopped with
them (it dies with its owner, as they do), that has imported the steps once. A rule script
sends its job (``request``: kind, config, wildcards, files, and its own working directory,
environment and standard streams) to the host (``client``), which forks a child that runs
the step exactly as the script would have (``steps``) and reports its exit status. Each job
still runs in a process of its own that ends with it; only the imports are shared. Without
a host (``mabench run``, or the first job of an invocation) the script runs the step itself.

May import: :mod:`mabench.steps.rules` (the steps; only ``steps`` and ``host`` do, so that a
rule script importing ``client`` stays cheap) and :mod:`mabench.servers` (the owner, and the
watchdog the host runs under).
"""
