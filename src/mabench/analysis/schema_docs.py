"""The table schemas in docs/outputs.md, generated from :mod:`mabench.analysis.tables`.

``python -m mabench.analysis.schema_docs docs/outputs.md`` (``make docs``) rewrites the part of
the file between the two ``GENERATED`` markers; a test keeps the file identical to the code.
"""

from __future__ import annotations

import sys
from pathlib import Path

from mabench.analysis.tables import SCHEMAS, describe

BEGIN = "<!-- BEGIN GENERATED: table schemas (make docs) -->"
END = "<!-- END GENERATED -->"

#: what one row of each table is
ROW = {
    "runs": "one row per run",
    "agents": "one row per run × agent",
    "calls": "one row per LLM call",
    "failures": "one row per failed attempt",
}


def schemas_markdown() -> str:
    """Every table's heading and column table, in the order of :data:`SCHEMAS`."""
    parts = [f"### `{name}.parquet`: {ROW[name]}\n\n{describe(name)}\n" for name in SCHEMAS]
    return "\n".join(parts)


def with_schemas(text: str) -> str:
    """``text`` with the generated block replaced by the current schemas."""
    try:
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
    except ValueError:
        raise ValueError(f"the generated block ({BEGIN} ... {END}) is missing") from None
    return f"{head}{BEGIN}\n{schemas_markdown()}{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m mabench.analysis.schema_docs docs/outputs.md", file=sys.stderr)
        return 2
    path = Path(args[0])
    path.write_text(with_schemas(path.read_text(encoding="utf-8")), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
