"""Damaged results, end to end: a study measured for real (real Snakemake, simulated servers as
processes behind a stand-in `ollama`), then damaged by hand the way people do (an editor saving
half a file, a copy into the wrong folder, a hand edit, options changed under
``--rerun-triggers mtime``). The next `snakemake` refuses each damaged file by name, says what
to do, shows no traceback, and leaves the tables byte-identical."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from snake import snakemake

from mabench.analysis.integrity import versions_read
from mabench.config import load_study
from mabench.datasets import tr110
from mabench.steps.rules import StudyPaths

pytestmark = pytest.mark.slow

FOOTER = "Do what each line says, then run snakemake again."
FAST = {"FAKE_OLLAMA_ARGS": "--ttft-ms 20 --token-ms 2"}


def study_file(path: Path, fake_ollama: Path, num_predict: int = 8) -> Path:
    study = {
        "study": "integ",
        "runs": 2,
        "retries": 0,
        "backend": {"kind": "ollama", "ollama_binary": str(fake_ollama), "startup_timeout_s": 30},
        "workloads": {
            "collector": {
                "calls": [{"prompt": "collector_analyse.md.j2", "num_predict": num_predict}]
            },
            "insight": {
                "calls": [{"prompt": "insight_insights.md.j2", "num_predict": num_predict}]
            },
        },
        "configs": [
            {"id": "c1", "scenario": "chimera_homo"},
            {"id": "c2", "scenario": "chimera_homo"},
        ],
    }
    path.write_text(yaml.safe_dump(study))
    return path


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory, fake_ollama: Path) -> tuple[Path, Path]:
    """A working directory with the study measured and reported (2 configs x 2 runs)."""
    root = tmp_path_factory.mktemp("measured")
    study = study_file(root / "study.yaml", fake_ollama)
    (root / "w").mkdir()
    snakemake(root / "w", configfile=study, env=FAST, check=True)
    return root / "w", study


@pytest.fixture
def workdir(measured: tuple[Path, Path], tmp_path: Path) -> Path:
    """A private copy of the measured study (file times kept, Snakemake's metadata too)."""
    shutil.copytree(measured[0], tmp_path / "w", symlinks=True)
    return tmp_path / "w"


PATHS = StudyPaths.of("integ")  # relative: the paths the pipeline names


def tables(workdir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((workdir / PATHS.tables).glob("*.parquet"))}


def edit(path: Path, change: Callable[[dict], None]) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data, indent=1))


def truncated(w: Path) -> list[str]:
    path = w / PATHS.record("c1", 1)
    path.write_bytes(path.read_bytes()[:500])
    return [
        f"{PATHS.record('c1', 1)}: not valid JSON: cut short (the file ends after 500 bytes, "
        "inside the JSON); delete it to have c1 run 1 measured again, or restore it from a backup"
    ]


def empty(w: Path) -> list[str]:
    (w / PATHS.record("c2", 2)).write_text("")
    return [
        f"{PATHS.record('c2', 2)}: empty file; delete it to have c2 run 2 measured again, or "
        "restore it from a backup"
    ]


def wrong_config_folder(w: Path) -> list[str]:
    # the case: runs/test004/run_1.json copied over runs/test108/run_1.json
    shutil.copy(w / PATHS.record("c1", 1), w / PATHS.record("c2", 1))
    return [
        f"{PATHS.record('c2', 1)}: a second copy of c1 run 1 of study 'integ' (its own record is "
        f"{PATHS.record('c1', 1)}), not c2 run 1 of study 'integ'; delete it to have c2 run 1 "
        "measured again (the original stays)"
    ]


def duplicate_run(w: Path) -> list[str]:
    # a hand edit: run 2's record now says it is run 1, which c2/run_1.json holds
    edit(w / PATHS.record("c2", 2), lambda d: d.update(run_index=1))
    return [
        f"{PATHS.record('c2', 2)}: a second copy of c2 run 1 of study 'integ' (its own record "
        f"is {PATHS.record('c2', 1)}), not c2 run 2 of study 'integ'; delete it to have c2 run "
        "2 measured again (the original stays)"
    ]


def wrong_schema_version(w: Path) -> list[str]:
    edit(w / PATHS.record("c1", 2), lambda d: d.update(schema_version=7))
    return [
        f"{PATHS.record('c1', 2)}: schema version 7, but this mabench reads {versions_read()} "
        "(written by another mabench version, or edited?); delete it to have c1 run 2 measured "
        "again, or restore it from a backup"
    ]


def several_at_once(w: Path) -> list[str]:
    shutil.copy(w / PATHS.record("c1", 2), w / PATHS.record("c2", 1))
    return [
        *truncated(w),
        f"{PATHS.record('c2', 1)}: a second copy of c1 run 2 of study 'integ' (its own record is "
        f"{PATHS.record('c1', 2)}), not c2 run 1 of study 'integ'; delete it to have c2 run 1 "
        "measured again (the original stays)",
        *empty(w),
    ]


CASES = {
    "truncated-record": truncated,
    "empty-record": empty,
    "record-in-wrong-config-folder": wrong_config_folder,
    "duplicate-run": duplicate_run,
    "wrong-schema-version": wrong_schema_version,
    "several-at-once": several_at_once,
}


def assert_refused(proc, workdir: Path, before: dict[str, bytes], lines: list[str]) -> None:
    """One message naming every file, the last lines of the rule's log and shown on the
    terminal; no traceback; the tables byte-identical."""
    shown = proc.stderr + proc.stdout
    assert proc.returncode != 0, shown[-3000:]
    n = len(lines)
    message = [
        f"The analysis refused {n} input file{'s' if n > 1 else ''}; nothing was written to "
        f"{PATHS.tables} (tables already there are those of the last successful aggregate):",
        *(f"  {line}" for line in lines),
        FOOTER,
    ]
    log = (workdir / PATHS.logs / "aggregate.log").read_text().splitlines()
    assert log[-len(message)].endswith(f" ERROR mabench: {message[0]}"), log
    assert log[-len(message) + 1 :] == message[1:]
    assert "\n".join(message) in shown  # on the terminal too (--show-failed-logs)
    assert "Traceback" not in shown and "Traceback" not in "\n".join(log)
    assert tables(workdir) == before


@pytest.mark.parametrize("damage", CASES.values(), ids=CASES.keys())
def test_a_damaged_record_is_refused_by_name_and_the_tables_are_untouched(
    workdir: Path, measured: tuple[Path, Path], damage: Callable[[Path], list[str]]
) -> None:
    before = tables(workdir)
    report = (workdir / PATHS.root / "technical_report.md").read_bytes()
    lines = damage(workdir)
    proc = snakemake(workdir, configfile=measured[1], env=FAST)
    assert_refused(proc, workdir, before, lines)
    assert (workdir / PATHS.root / "technical_report.md").read_bytes() == report
    # told again on the next invocation: the refusal left the tables' inputs.json missing
    again = snakemake(workdir, configfile=measured[1], env=FAST)
    assert_refused(again, workdir, before, lines)


def test_records_of_changed_options_kept_by_mtime_triggers_are_refused_as_stale(
    workdir: Path, measured: tuple[Path, Path], fake_ollama: Path
) -> None:
    """Options changed, one record deleted to measure it again, --rerun-triggers mtime: the
    new record is measured, and the analysis refuses to mix it with the stale ones."""
    before = tables(workdir)
    old = {c: recorded_hash(workdir / PATHS.record(c, 1)) for c in ("c1", "c2")}
    changed = study_file(workdir.parent / "changed.yaml", fake_ollama, num_predict=9)
    now = {c: load_study(changed).config_hash(c) for c in ("c1", "c2")}
    (workdir / PATHS.record("c1", 2)).unlink()
    proc = snakemake(workdir, "--rerun-triggers", "mtime", configfile=changed, env=FAST)
    assert recorded_hash(workdir / PATHS.record("c1", 2)) == now["c1"], proc.stderr[-3000:]

    def stale(config: str) -> str:
        return (
            f"stale: measured under other options than config {config} has now (its config "
            f"hash {old[config][:12]}…, the config's now {now[config][:12]}…; kept by "
            "--rerun-triggers mtime?); delete it to have it measured again under the current "
            "options, or restore the options it was measured with"
        )

    lines = [
        f"{PATHS.record('c1', 1)}: {stale('c1')}",
        f"{PATHS.record('c2', 1)}: {stale('c2')}",
        f"{PATHS.record('c2', 2)}: {stale('c2')}",
    ]
    assert_refused(proc, workdir, before, lines)


def recorded_hash(path: Path) -> str:
    return json.loads(path.read_text())["environment"]["config_hash"]


def test_a_damaged_unload_file_is_refused_by_name(
    workdir: Path, measured: tuple[Path, Path]
) -> None:
    """Snakemake measures the config's runs again first (they follow the unload file); the
    analysis then refuses the unload file itself."""
    before = tables(workdir)
    path = workdir / PATHS.unload("c2")
    path.write_text(path.read_text()[:40])
    proc = snakemake(workdir, configfile=measured[1], env=FAST)
    assert_refused(
        proc,
        workdir,
        before,
        [
            f"{PATHS.unload('c2')}: not valid JSON: cut short (the file ends after 40 bytes, "
            "inside the JSON); delete it to have the forced unload before c2 done again "
            "(Snakemake then measures the runs of c2 again, as they follow it), or restore it "
            "from a backup"
        ],
    )


def test_an_unreadable_failure_report_is_named_and_skipped_never_fatal(
    workdir: Path, measured: tuple[Path, Path]
) -> None:
    reports = workdir / PATHS.failures
    reports.mkdir(exist_ok=True)
    cut = '{"kind": "mabench.failure", "stu'
    (reports / "c1_run1_attempt1_cut.json").write_text(cut)
    report = {
        "kind": "mabench.failure",
        "study": "integ",
        "config_id": "c1",
        "run_index": 1,
        "attempt": 1,
        "at": "2026-01-05T09:00:00+00:00",
        "cause": "timeout",
        "message": "no answer for 1.5 s",
    }
    (reports / "c1_run1_attempt1_ok.json").write_text(json.dumps(report))
    proc = snakemake(workdir, "--forcerun", "aggregate", configfile=measured[1], env=FAST)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = (
        f"failure report {PATHS.failures / 'c1_run1_attempt1_cut.json'}: skipped, not valid "
        f"JSON: cut short (the file ends after {len(cut)} bytes, inside the JSON); it is left out "
        "of the failures table; delete it, or restore it from a backup"
    )
    assert line in proc.stderr  # on the terminal, though the job succeeded
    assert line in (workdir / PATHS.logs / "aggregate.log").read_text()
    failures = pq.read_table(workdir / PATHS.tables / "failures.parquet").to_pylist()
    assert [f["report_path"] for f in failures] == [
        str(PATHS.failures / "c1_run1_attempt1_ok.json")
    ]
    text = (workdir / PATHS.root / "technical_report.md").read_text()
    assert "4 runs were recorded in 5 attempts: 1 attempt failed" in text


def test_a_damaged_tr110_folder_is_refused_by_name(tmp_path: Path) -> None:
    src = tmp_path / "tr110"
    shutil.copytree(tr110.bundled_dir() / "phase_1_test_004", src / "phase_1_test_004")
    metrics = src / "phase_1_test_004" / "run_3" / "metrics.json"
    metrics.write_text(metrics.read_text()[:200])
    study = tmp_path / "legacy.yaml"
    study.write_text(
        yaml.safe_dump({"study": "legacy", "import": {"format": "tr110", "path": str(src)}})
    )
    (tmp_path / "w").mkdir()
    proc = snakemake(tmp_path / "w", configfile=study)
    shown = proc.stderr + proc.stdout
    assert proc.returncode != 0
    assert (
        f"  {metrics}: not valid JSON: cut short (the file ends after 200 bytes, inside the JSON)"
        in shown
    )
    assert "Traceback" not in shown
    assert not (tmp_path / "w" / "results" / "legacy" / "tables" / "runs.parquet").exists()
