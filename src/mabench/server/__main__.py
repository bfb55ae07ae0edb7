"""``python -m mabench.server``: the same as ``mabench serve``."""

from mabench.server.cli import build_parser, main

raise SystemExit(main(build_parser().parse_args()))
