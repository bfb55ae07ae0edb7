"""The layering of ``src/mabench`` is checked, not promised, and the tests keep to it.

Each package's ``__init__`` docstring states what it may import; ``[tool.importlinter]`` in
pyproject.toml states the same as contracts, which ``make lint`` and these tests check. No
module of ``mabench`` may take part in an import cycle; the tests mirror ``src/mabench``, and
no test imports the benchmarks (``benchmarks/``): a test of a benchmark runs it as a user does.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grimp
import pytest
from importlinter.api import read_configuration

import mabench

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
SRC = Path(mabench.__file__).parent
TESTS = ROOT / "tests"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

#: test folders that test something other than one package of src/mabench
NOT_PACKAGES = {
    "pipeline": "the workflow (Snakefile, rules, scripts) through real Snakemake",
    "cluster": "the workflow on a real Slurm",
    "benchmarks": "the benchmarks, run as `python -m benchmarks`",
    "conformance": "a study against each server shape the docs claim, through real Snakemake",
}


def _configuration() -> dict:
    return read_configuration(str(PYPROJECT))


def _contract_ids() -> list[str]:
    return [c["id"] for c in _configuration()["contracts_options"]]


def _packages() -> list[str]:
    return sorted(p.parent.name for p in SRC.glob("*/__init__.py"))


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    """mabench's import graph, built as the contracts' is (pyproject.toml's session options)."""
    options = _configuration()["session_options"]
    exclude = str(options.get("exclude_type_checking_imports", False)).lower() == "true"
    return grimp.build_graph("mabench", exclude_type_checking_imports=exclude, cache_dir=None)


@pytest.mark.parametrize("contract", _contract_ids())
def test_the_imports_keep_the_contract(contract: str) -> None:
    proc = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo", "--contract", contract, str(PYPROJECT)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, f"contract {contract!r} is broken:\n{proc.stdout}{proc.stderr}"


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Each set of modules that import each other (directly or through others), sorted."""
    found: set[frozenset[str]] = set()
    for module in graph.modules:
        around = graph.find_upstream_modules(module) & graph.find_downstream_modules(module)
        if around:
            found.add(frozenset({module, *around}))
    return sorted(sorted(c) for c in found)


def _loop(graph: grimp.ImportGraph, cycle: list[str]) -> str:
    """One loop through the cycle's first module, as ``a -> b -> a``."""
    start = cycle[0]
    first = sorted(graph.find_modules_directly_imported_by(start) & set(cycle))[0]
    back = graph.find_shortest_chain(importer=first, imported=start) or ()
    return " -> ".join([start, *back])


def test_no_module_takes_part_in_an_import_cycle(graph: grimp.ImportGraph) -> None:
    cycles = _cycles(graph)
    assert not cycles, "import cycles (break each so that its modules import one way):\n" + (
        "\n".join(f"  {', '.join(c)}: {_loop(graph, c)}" for c in cycles)
    )


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(
    node: ast.Import | ast.ImportFrom, module: str, is_package: bool, modules: set[str]
) -> Iterator[str]:
    """The mabench modules an import statement of ``module`` imports (absolute names)."""
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names if alias.name in modules)
        return
    target = node.module or ""
    if node.level:
        package = module.split(".") if is_package else module.split(".")[:-1]
        base = ".".join(package[: len(package) - node.level + 1])
        target = f"{base}.{target}" if target else base
    for alias in node.names:
        name = f"{target}.{alias.name}"  # ``from package import module``
        if name in modules:
            yield name
        elif target in modules:
            yield target


def _mabench_imports(path: Path, modules: set[str]) -> Iterator[tuple[str, str]]:
    """(importer, imported) of each import statement of ``path`` that names a mabench module,
    wherever it stands: at the top, inside a function, under ``if TYPE_CHECKING:``."""
    module = _module_name(path)
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import | ast.ImportFrom):
            for imported in _imported(node, module, path.name == "__init__.py", modules):
                yield module, imported


def test_the_contracts_see_every_import_statement(graph: grimp.ImportGraph) -> None:
    # late imports (inside functions) and TYPE_CHECKING imports are imports all the same
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 50
    seen = [i for path in files for i in _mabench_imports(path, graph.modules)]
    assert len(seen) > 100
    missing = [
        f"{a} -> {b}" for a, b in seen if not graph.direct_import_exists(importer=a, imported=b)
    ]
    assert not missing, f"imports the contracts do not see: {missing}"


def _imports_benchmarks(path: Path) -> list[int]:
    """Lines of ``path`` that import the benchmarks package (anywhere in the file)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module or ""]
        else:
            continue
        if any(n == "benchmarks" or n.startswith("benchmarks.") for n in names):
            lines.append(node.lineno)
    return lines


def test_no_test_imports_the_benchmarks() -> None:
    files = sorted(TESTS.rglob("*.py"))
    assert len(files) > 30
    found = {str(p.relative_to(ROOT)): lines for p in files if (lines := _imports_benchmarks(p))}
    assert not found, (
        f"tests import benchmarks/ (lines {found}): run a benchmark as `python -m benchmarks "
        "NAME --quick --out-dir DIR` (tests/benchmarks), and test what the library does in the "
        "tests of its package"
    )


@pytest.mark.parametrize("package", _packages())
def test_each_package_has_its_tests(package: str) -> None:
    tests = sorted((TESTS / package).glob("test_*.py"))
    assert tests, f"src/mabench/{package} has no tests in tests/{package}/test_*.py"


def test_each_test_folder_mirrors_a_package() -> None:
    folders = {p.relative_to(TESTS).parts[0] for p in TESTS.glob("*/**/test_*.py")}
    strays = sorted(folders - set(_packages()) - set(NOT_PACKAGES))
    assert not strays, f"tests/{strays} test no package of src/mabench: move them or the package"
