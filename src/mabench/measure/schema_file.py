"""The run record's JSON schema file, generated from the record's Structs.

``schemas/run_record.schema.json`` (linked as ``workflow/schemas/run_record.schema.json``) is
for readers of run records that are not mabench; mabench validates with the Structs
themselves (:mod:`mabench.measure.records`). ``python -m mabench.measure.schema_file`` rewrites
the file from the Structs; with ``--check`` it only says whether the file is current (exit 1
when it is not).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mabench.measure.records import record_schema

SCHEMA_FILE = Path(__file__).resolve().parents[1] / "schemas" / "run_record.schema.json"


def schema_text() -> str:
    """The schema file's content: the generated schema as indented JSON."""
    return json.dumps(record_schema(), indent=1, ensure_ascii=False) + "\n"


def is_current(path: Path = SCHEMA_FILE) -> bool:
    return path.is_file() and path.read_text(encoding="utf-8") == schema_text()


def write_schema(path: Path = SCHEMA_FILE) -> None:
    path.write_text(schema_text(), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mabench.measure.schema_file", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--check", action="store_true", help="only check that the file is current")
    args = parser.parse_args(argv)
    if args.check:
        if is_current():
            return 0
        print(
            f"{SCHEMA_FILE} is not the schema the run record's Structs generate; "
            "run `python -m mabench.measure.schema_file` to rewrite it",
            file=sys.stderr,
        )
        return 1
    write_schema()
    print(f"wrote {SCHEMA_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
