"""Performance benchmarks of mabench: does the harness measure the servers, not itself?

Run them all with ``python -m benchmarks`` (see ``benchmarks/README.md``); they are not part
of the test suite. Each benchmark module has ``run(quick: bool) -> Result``.
"""

BENCHMARKS = (
    "harness_overhead",
    "many_agents",
    "ttft_accuracy",
    "server_overhead",
    "analysis_scale",
    "pipeline_overhead",
    "memory",
    "slurm_overhead",
)
