"""Result files and the README's tables: each goal's verdict is its measurement against its
target, a result's status follows its goals, and ``python -m benchmarks --table`` writes both
tables of a README from the result files (here: quick runs, into a copy of the README's
markers around other prose)."""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
NAMES = ("harness_overhead", "ttft_accuracy")
OPS = {">=": (operator.ge, "≥"), "<=": (operator.le, "≤")}
VERDICT = {True: "pass", False: "**FAIL**", None: "n/a"}
CLIENTS = ["ours-asyncio", "ours-threads", "aiohttp", "httpx-async", "httpx-sync", "ollama"]


@pytest.fixture(scope="module")
def results(quick: Callable[[str], dict[str, Any]]) -> list[dict[str, Any]]:
    return [quick(name) for name in NAMES]


@pytest.fixture(scope="module")
def readme(
    results: list[dict[str, Any]],
    results_dir: Path,
    benchmarks_cli: Callable[..., Any],
    tmp_path_factory: pytest.TempPathFactory,
) -> str:
    """A README of other prose with the real one's peers markers, after ``--table``."""
    real = (ROOT / "benchmarks" / "README.md").read_text(encoding="utf-8")
    markers = re.findall(r"^<!-- peers:(?:start|end).*-->$", real, flags=re.MULTILINE)
    assert len(markers) == 2, "benchmarks/README.md lost its peers markers"
    path = tmp_path_factory.mktemp("readme") / "README.md"
    path.write_text(f"# Other prose\n\n{markers[0]}\n{markers[1]}\n", encoding="utf-8")
    proc = benchmarks_cli("--table", "--out-dir", str(results_dir), "--readme", str(path))
    assert proc.returncode == 0, proc.stderr
    return path.read_text(encoding="utf-8")


def test_each_goal_s_verdict_is_its_measurement_against_its_target(
    results: list[dict[str, Any]],
) -> None:
    for result in results:
        assert result["goals"], result["benchmark"]
        for g in result["goals"]:
            compare, symbol = OPS[g["op"]]
            assert g["goal"] == f"{symbol} {g['target']:g}" + (f" {g['unit']}" if g["unit"] else "")
            expected = None if g["measured"] is None else compare(g["measured"], g["target"])
            assert g["pass"] is expected, g


def test_a_result_s_status_follows_its_goals(results: list[dict[str, Any]]) -> None:
    for result in results:
        verdicts = [g["pass"] for g in result["goals"]]
        expected = "fail" if False in verdicts else "incomplete" if None in verdicts else "pass"
        assert result["status"] == expected, (result["benchmark"], verdicts)


def test_the_results_table_lists_every_goal_with_its_verdict(
    results: list[dict[str, Any]], readme: str
) -> None:
    assert readme.startswith("# Other prose\n")
    lines = readme.splitlines()
    for result in results:
        title = f"[{result['benchmark']}](results/{result['benchmark']}.json) (quick)"
        for g in result["goals"]:
            row = [line for line in lines if line.startswith(f"| {title} | {g['name']}: ")]
            assert len(row) == 1 and f"| {VERDICT[g['pass']]} |" in row[0], (g, row)


def test_the_peers_table_lists_the_clients_in_order(readme: str) -> None:
    start, end = (i for i, line in enumerate(readme.splitlines()) if line.startswith("<!-- peers:"))
    block = readme.splitlines()[start : end + 1]
    concurrent = [line.split(" | ")[1] for line in block if line.startswith("| 2 |")]
    assert concurrent == CLIENTS
    sequential = [line.split(" | ")[0].removeprefix("| ") for line in block]
    assert "ours (async client)" in sequential and "raw socket (the floor: server and OS)" in (
        sequential
    )
