"""The README and docs/ tell the truth: the two commands, the CI command, the table schemas,
the links."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mabench.analysis import schema_docs

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
DOCS = ROOT / "docs"


def test_first_lines_give_the_two_commands():
    head = "\n".join(README.splitlines()[:10])
    assert re.search(r"^make run\s+#", head, flags=re.M)
    assert re.search(r"^make test\s+#", head, flags=re.M)


def test_ci_runs_the_readme_test_command_first():
    lines = [
        line.strip()
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not re.match(r"^(#|set |cd |export )", line.strip())
    ]
    assert lines[0] == "make test"


def test_table_schemas_in_the_docs_match_the_code():
    text = (DOCS / "outputs.md").read_text()
    assert schema_docs.with_schemas(text) == text, "run `make docs`"


@pytest.mark.parametrize("page", ["README.md", *(f"docs/{p.name}" for p in DOCS.glob("*.md"))])
def test_relative_links_resolve(page):
    path = ROOT / page
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", path.read_text()):
        assert (path.parent / target).exists(), f"{page} links to {target}, which does not exist"


def test_no_placeholders_left():
    # a placeholder is an upper-case name in the prose; names in code (environment variables
    # such as `OLLAMA_HOST`) are real
    prose = re.sub(r"```.*?```|`[^`]*`", "", README, flags=re.DOTALL)
    assert not re.search(r"\b[A-Z]{3,}_[A-Z_]{3,}\b", prose)
    assert "TODO" not in prose and "TBD" not in prose


def test_every_study_file_is_documented():
    for path in (ROOT / "workflow" / "studies").glob("*.yaml"):
        assert f"workflow/studies/{path.name}" in README
