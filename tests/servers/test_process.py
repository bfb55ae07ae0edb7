"""Starting a server process and waiting until it answers, with real processes."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from mabench.servers.net import LOOPBACK, free_port
from mabench.servers.process import ServerStartError, start_logged, stop, wait_answering


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_a_server_that_answers_is_ready(tmp_path: Path) -> None:
    port = free_port()
    command = [sys.executable, "-m", "http.server", str(port), "--bind", LOOPBACK]
    log = tmp_path / "logs" / "http.log"
    proc = start_logged(command, log)
    try:
        wait_answering(
            proc, f"http://{LOOPBACK}:{port}", command=command, log_path=log, timeout_s=20
        )
        assert proc.poll() is None
    finally:
        assert stop(proc) is not None
    assert log.read_text().startswith("\n# ")  # what was started, and when
    assert "starting: " + " ".join(command) in log.read_text()


def test_a_server_that_exits_is_named_with_its_status_and_log(tmp_path: Path) -> None:
    command = _python("import sys; print('no model to serve', flush=True); sys.exit(3)")
    log = tmp_path / "dies.log"
    proc = start_logged(command, log)
    url = f"http://{LOOPBACK}:{free_port()}"
    with pytest.raises(ServerStartError) as info:
        wait_answering(proc, url, command=command, log_path=log, timeout_s=20, name="server 'a'")
    message = str(info.value)
    assert message.startswith(f"server 'a' at {url} ({sys.executable} -c ")
    assert f"exited with code 3; last lines of {log}:\n" in message
    assert message.endswith("no model to serve")


def test_a_server_that_never_answers_times_out_and_is_left_running(tmp_path: Path) -> None:
    command = _python("import time; time.sleep(60)")
    log = tmp_path / "silent.log"
    proc = start_logged(command, log)
    try:
        with pytest.raises(ServerStartError, match=r"did not answer GET /health within 0\.3 s"):
            url = f"http://{LOOPBACK}:{free_port()}"
            wait_answering(proc, url, command=command, log_path=log, timeout_s=0.3, path="/health")
        assert proc.poll() is None  # the caller decides what to do with it
    finally:
        stop(proc, grace_s=1)


def test_without_a_log_the_error_says_the_output_was_discarded() -> None:
    command = _python("raise SystemExit(1)")
    proc = start_logged(command, None)
    with pytest.raises(ServerStartError, match=r"exited with code 1 \(its output was discarded"):
        wait_answering(
            proc, f"http://{LOOPBACK}:{free_port()}", command=command, log_path=None, timeout_s=20
        )


def test_a_command_that_cannot_start_is_an_error_naming_it(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-server")
    with pytest.raises(
        ServerStartError, match=f"cannot start {re.escape(missing)} serve: .* installed"
    ):
        start_logged([missing, "serve"], tmp_path / "missing.log")
