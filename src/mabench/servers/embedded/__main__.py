"""``python -m mabench.servers.embedded``: the same as ``mabench serve``."""

from mabench.servers.embedded.cli import build_parser, main

raise SystemExit(main(build_parser().parse_args()))
