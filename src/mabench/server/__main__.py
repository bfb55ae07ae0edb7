"""``python -m mabench.server``: the same as ``mabench serve`` (:mod:`mabench.servers.embedded`)."""

from mabench.servers.embedded.cli import build_parser, main

raise SystemExit(main(build_parser().parse_args()))
