"""``python -m mabench.server``: kept as the short name of :mod:`mabench.servers.embedded`."""
