"""The ``mabench`` command line: one subcommand per task, each in its own module.

Subcommand modules are imported only when used, so ``mabench serve`` does not pay for pandas
and ``mabench run`` does not pay for llama.cpp. Each module provides ``configure(parser)`` and
``main(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from mabench import __version__

#: subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": (
        "mabench.servers.embedded.cli",
        "run the embedded Ollama-compatible server (llama.cpp)",
    ),
    "run": ("mabench.cli.run", "measure one config x run of a study outside Snakemake"),
    "check": (
        "mabench.cli.check",
        "measure servers you already run (--url ...): a generated study, its headline",
    ),
    "import-tr110": (
        "mabench.datasets.tr110",
        "convert the TR110 result layout into our Parquet tables",
    ),
    "sim-serve": (
        "mabench.servers.simulated",
        "run a simulated Ollama server with exact, known timing",
    ),
    "doctor": ("mabench.cli.doctor", "check that the embedded model really generates on this CPU"),
}


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mabench", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"mabench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        # Only the chosen command's module is imported to add its arguments.
        if argv and argv[0] == name:
            importlib.import_module(module).configure(sp)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
    module = importlib.import_module(COMMANDS[args.command][0])
    return int(module.main(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
