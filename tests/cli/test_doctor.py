"""``mabench doctor``: the embedded model really generates on this CPU, and a SIGILL is explained."""

from __future__ import annotations

import argparse
import signal
import subprocess

import pytest

from mabench.cli import doctor

pytestmark = pytest.mark.timeout(60)


def test_doctor_reports_sigill(monkeypatch, capsys) -> None:
    def fake_run(*args, **kwargs):
        return subprocess.CompletedProcess(args, -signal.SIGILL, "", "")

    monkeypatch.setattr(doctor.subprocess, "run", fake_run)
    args = argparse.Namespace(model_path=None, tokens=4, num_thread=1, timeout=10)
    assert doctor.main(args) == 1
    err = capsys.readouterr().err
    assert "SIGILL" in err and "-DGGML_NATIVE=OFF" in err


@pytest.mark.timeout(180)
def test_doctor_generates(capsys) -> None:
    args = argparse.Namespace(model_path=None, tokens=4, num_thread=1, timeout=150)
    assert doctor.main(args) == 0
    out = capsys.readouterr().out
    assert "tokens/s" in out and "llama-cpp-python: 0.3.36" in out
