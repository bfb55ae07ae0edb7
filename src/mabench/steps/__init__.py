"""What the workflow's rules call: one function per step, and what they share.

Owns the steps of the rules (``rules``: where a study's files live, a rule script's logging,
server start-up, forced unload, one run, pulling models, the report's settings, releasing the
servers), measuring one run into its record or a failure report (``run_job``), the line after
each run (``progress``) and the legacy datasets as the statistics need them (``legacy``).

May import: every other ``mabench`` package; only ``cli`` imports it.
"""
