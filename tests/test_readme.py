"""The README tells the truth: the two commands, the CI command, the table schemas."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mabench.analysis import tables

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_first_lines_give_the_two_commands():
    head = "\n".join(README.splitlines()[:10])
    assert re.search(r"^make run\s+#", head, flags=re.M)
    assert re.search(r"^make test\s+#", head, flags=re.M)


def test_ci_runs_exactly_the_readme_test_command():
    lines = [
        line.strip()
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not re.match(r"^(#|set |cd |export )", line.strip())
    ]
    assert lines == ["make test"]


@pytest.mark.parametrize("name", sorted(tables.SCHEMAS))
def test_schema_tables_match_the_code(name):
    assert tables.describe(name) in README


def test_no_placeholders_left():
    # a placeholder is an upper-case name in the prose; names in code (environment variables
    # such as `OLLAMA_HOST`) are real
    prose = re.sub(r"```.*?```|`[^`]*`", "", README, flags=re.DOTALL)
    assert not re.search(r"\b[A-Z]{3,}_[A-Z_]{3,}\b", prose)
    assert "TODO" not in prose and "TBD" not in prose


def test_every_study_file_is_documented():
    for path in (ROOT / "workflow" / "studies").glob("*.yaml"):
        assert f"workflow/studies/{path.name}" in README
