"""Planning the workflow has no effect. On a fresh copy of the workflow, `snakemake -n`,
`--dag`, `--rulegraph` and `--lint` each run the Snakefile's parse-time code (the config check,
the servers' ownership claim, the servers' preflight) and exit 0, leave `results/` absent,
write nothing but Snakemake's own `.snakemake/` folders, and leave no process behind."""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

import pytest
import subreaper
from snake import ROOT

#: what a clone holds that Snakemake reads (the mabench package is installed in the venv)
WORKFLOW = ("Snakefile", "config.yaml", "workflow", "scripts", "report", "envs", "profiles")
#: Snakemake's own log of the invocation, under .snakemake/log/
LOG = r"\.snakemake/log/[0-9T:.-]+\.snakemake\.log"
#: each plan, and the only files it may write: Snakemake's own (besides empty folders)
PLANS = {
    "dry run": (["-n"], [r"\.snakemake/iocache/latest\.pkl"]),
    "dag": (["--dag"], [LOG]),
    "rule graph": (["--rulegraph"], [LOG]),
    "lint": (["--lint"], [LOG]),
}


def fresh_copy(dest: Path) -> Path:
    """The workflow's files as a fresh clone has them (no results, no .snakemake)."""
    dest.mkdir()
    for name in WORKFLOW:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, dest / name)
    return dest


def tree(root: Path) -> dict[str, tuple[int, int] | None]:
    """Every path under ``root``: a file's size and modification time, None for a folder."""
    return {
        str(p.relative_to(root)): None if p.is_dir() else (p.stat().st_size, p.stat().st_mtime_ns)
        for p in root.rglob("*")
    }


def users_environment() -> dict[str, str]:
    """This environment without what a test or an invocation before set (ownership claims,
    report templates): a user's shell in a fresh clone."""
    return {k: v for k, v in os.environ.items() if not k.startswith("MABENCH_")}


@pytest.mark.slow
@pytest.mark.parametrize(("args", "written"), PLANS.values(), ids=PLANS.keys())
def test_planning_starts_nothing_and_writes_nothing(tmp_path, args, written):
    clone = fresh_copy(tmp_path / "clone")
    before = tree(clone)
    outcome = subreaper.run(
        [sys.executable, "-m", "snakemake", *args], clone, users_environment(), timeout_s=300
    )
    assert outcome.returncode == 0, outcome.stdout[-3000:] + outcome.stderr[-3000:]
    assert outcome.left_behind == []
    assert not (clone / "results").exists()
    after = tree(clone)
    assert [p for p in before if after.get(p) != before[p]] == []
    appeared = set(after) - set(before)
    files = sorted(p for p in appeared if after[p] is not None)
    assert len(files) == len(written), files
    assert all(re.fullmatch(w, f) for w, f in zip(written, files, strict=True)), files
    assert {p.split(os.sep)[0] for p in appeared} == {".snakemake"}


def test_a_process_left_behind_is_named(tmp_path):
    """The check above can fail: a process started in a session of its own, as the pool
    starts a server, and still running when its starter exits, is named."""
    start = "import subprocess; subprocess.Popen(['sleep', '60'], start_new_session=True)"
    outcome = subreaper.run([sys.executable, "-c", start], tmp_path, dict(os.environ), 60)
    assert outcome.returncode == 0, outcome.stderr
    assert len(outcome.left_behind) == 1
    assert outcome.left_behind[0].endswith(": sleep 60"), outcome.left_behind
