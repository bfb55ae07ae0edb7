"""A TR110 folder whose layout or files differ from what the importer reads is refused, with
every offending file named and nothing imported."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pytest

from mabench.analysis.tables import read_table
from mabench.datasets import tr110
from mabench.datasets.tr110_files import LayoutError

TESTS = ("phase_1_test_004", "phase_2_test_108")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Two tests of the bundled TR110 data, copied: a folder the importer reads."""
    src = tmp_path / "tr110"
    for name in TESTS:
        shutil.copytree(tr110.bundled_dir() / name, src / name)
    return src


def refusal(src: Path, out: Path) -> list[str]:
    with pytest.raises(LayoutError) as err:
        tr110.import_tr110(src, out)
    assert not out.exists() or not any(out.iterdir()), "a refused import wrote tables"
    lines = str(err.value).splitlines()
    assert lines[0] == (
        "Not a TR110 results folder as the importer reads it; nothing was imported:"
    )
    assert lines[-1] == "Fix or remove what each line names, or import another folder."
    assert [line[2:] for line in lines[1:-1]] == list(err.value.problems)
    return list(err.value.problems)


def edit(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_the_copied_folder_imports(folder: Path, tmp_path: Path) -> None:
    paths = tr110.import_tr110(folder, tmp_path / "out")
    runs = read_table(paths["runs"], "runs").to_pandas()
    assert sorted(runs["config_id"].unique()) == ["test004", "test108"]
    assert len(runs) == 10


def test_what_is_not_a_tr110_folder_is_named(tmp_path: Path) -> None:
    assert refusal(tmp_path / "nowhere", tmp_path / "out") == [
        f"{tmp_path / 'nowhere'}: not a folder"
    ]
    (tmp_path / "empty").mkdir()
    assert refusal(tmp_path / "empty", tmp_path / "out") == [
        f"{tmp_path / 'empty'}: no phase_<P>_test_<NNN> folders (TR110 layout)"
    ]


def test_every_damaged_file_is_named_at_once(folder: Path, tmp_path: Path) -> None:
    t004, t108 = folder / TESTS[0], folder / TESTS[1]
    (t004 / "summary.json").write_text((t004 / "summary.json").read_text()[:300])
    edit(t004 / "run_2" / "metrics.json", lambda d: d["summary"].update(concurrent_wall_time="9s"))
    edit(t004 / "run_3" / "metrics.json", lambda d: d["summary"].pop("baseline_duration"))
    (t108 / "run_4" / "metrics.json").unlink()
    (t108 / "run_5" / "metrics.json").write_text("")
    edit(t108 / "summary.json", lambda d: d.pop("aggregate"))
    assert refusal(folder, tmp_path / "out") == [
        f"{t004 / 'summary.json'}: not valid JSON: cut short (the file ends after 300 bytes, "
        "inside the JSON)",
        f"{t004 / 'run_2' / 'metrics.json'}: summary/concurrent_wall_time: '9s' is not of type "
        "'number'",
        f"{t004 / 'run_3' / 'metrics.json'}: summary: 'baseline_duration' is a required property",
        f"{t108 / 'summary.json'}: (top level): 'aggregate' is a required property",
        f"{t108 / 'run_4' / 'metrics.json'}: missing",
        f"{t108 / 'run_5' / 'metrics.json'}: empty file",
    ]


def test_a_run_copied_over_another_is_named(folder: Path, tmp_path: Path) -> None:
    t004 = folder / TESTS[0]
    shutil.copy(t004 / "run_1" / "metrics.json", t004 / "run_2" / "metrics.json")
    assert refusal(folder, tmp_path / "out") == [
        f"{t004 / 'run_2' / 'metrics.json'}: holds run 1 (summary/run_number), but its folder "
        "is run 2: copied from another run?"
    ]


def test_folders_that_break_the_layout_are_named(folder: Path, tmp_path: Path) -> None:
    t004, t108 = folder / TESTS[0], folder / TESTS[1]
    shutil.copytree(t004 / "run_1", t004 / "run_01")
    for run in t108.glob("run_*"):
        shutil.rmtree(run)
    assert refusal(folder, tmp_path / "out") == [
        f"{t004 / 'run_1'}: run 1 again ({t004 / 'run_01'} is run 1 too)",
        f"{t108}: no run_<i>/ folders (each run's metrics.json is in one)",
    ]


def test_one_test_in_two_phases_is_named(folder: Path, tmp_path: Path) -> None:
    shutil.copytree(folder / TESTS[0], folder / "phase_3_test_004")
    assert refusal(folder, tmp_path / "out") == [
        f"{folder / TESTS[0]}, {folder / 'phase_3_test_004'}: all are test004"
    ]


def test_the_command_line_prints_the_refusal_and_exits_1(
    folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (folder / TESTS[0] / "run_1" / "metrics.json").write_text("[]")
    parser = argparse.ArgumentParser()
    tr110.configure(parser)
    assert tr110.main(parser.parse_args([str(folder), "--out", str(tmp_path / "t")])) == 1
    err = capsys.readouterr().err
    assert (
        f"{folder / TESTS[0] / 'run_1' / 'metrics.json'}: not a JSON object but a JSON array" in err
    )
    assert "Traceback" not in err
