"""A disk that fills while a record is written: no partial record, a clear error, earlier
records intact. On a real full filesystem (a small tmpfs, where this machine lets us mount
one), and under a file size limit (``RLIMIT_FSIZE``, which needs no privilege)."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mabench.measure.records import WriteFailed, write_json_atomic

#: a record-like document of ~40 KB (a run record with its arrivals is tens of KB)
BIG = {"calls": [{"response_text": "tok " * 100, "token_arrivals_us": list(range(200))}] * 40}


def mounted_tmpfs(where: Path, size: str) -> Path:
    """A tmpfs of ``size`` mounted at ``where``; skips the test where mounting is refused."""
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}): needs root")
    return where


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB filesystem of its own."""
    disk = mounted_tmpfs(tmp_path / "disk", "256k")
    yield disk
    subprocess.run(["umount", str(disk)], check=True)


def fill(disk: Path) -> Path:
    """Fill ``disk`` up to its last byte with one file; returns it."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_a_full_disk_leaves_no_partial_record_and_earlier_records_intact(small_disk):
    runs = small_disk / "runs"
    write_json_atomic(runs / "run_1.json", BIG)
    before = (runs / "run_1.json").read_bytes()
    fill(small_disk)
    with pytest.raises(WriteFailed) as failed:
        write_json_atomic(runs / "run_2.json", BIG)
    assert failed.value.errno == errno.ENOSPC
    message = str(failed.value)
    assert f"cannot write {runs / 'run_2.json'}: No space left on device" in message
    assert "no partial file remains; free space there" in message
    assert not (runs / "run_2.json").exists()
    assert leftovers(runs) == []
    # rewriting an existing record on the full disk keeps its old, complete content
    with pytest.raises(WriteFailed):
        write_json_atomic(runs / "run_1.json", {**BIG, "more": "x" * 50_000})
    assert (runs / "run_1.json").read_bytes() == before
    assert json.loads(before) == BIG


FSIZE_SCRIPT = """
import resource, signal, sys
from mabench.measure.records import WriteFailed, write_json_atomic
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead
resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))
write_json_atomic(sys.argv[1] + "/run_1.json", {"small": 1})
try:
    write_json_atomic(sys.argv[1] + "/run_2.json", {"big": "x" * 100_000})
except WriteFailed as exc:
    print(exc)
"""


def test_a_file_size_limit_fails_the_write_cleanly(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", FSIZE_SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.startswith(f"cannot write {tmp_path / 'run_2.json'}: File too large")
    assert "raise the quota or file size limit" in done.stdout
    assert json.loads((tmp_path / "run_1.json").read_text()) == {"small": 1}
    assert not (tmp_path / "run_2.json").exists()
    assert leftovers(tmp_path) == []
