"""llama.cpp's own HTTP server (``llama-server``) as a server the pool starts.

``make setup`` builds it from the llama.cpp sources vendored in the llama-cpp-python sdist
(``envs/build-llama-server.sh``: the same llama.cpp version and portable CPU flags as the
embedded server) and links it beside this Python. One process serves one GGUF model, under
the name its agents ask for (``--alias``), with ``--parallel`` slots that it batches
together (continuous batching), each slot with ``ctx_size`` tokens of context. It is started
with ``--slots`` and ``--slot-save-path`` (so the cache policy can erase every slot before
each measured phase: without a save path it refuses every slot action, the erase too),
without its prompt cache in RAM (``--cache-ram 0``: otherwise an erased slot's prompt could
come back from RAM, and a later phase would skip a prefill the first one paid), and with
``--metrics``; it answers ``/health``, ``/v1/models`` and the streamed
``/v1/chat/completions``, whose final chunk carries llama.cpp's ``timings`` (the server
clock of each call).
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mabench.servers.embedded.registry import (
    BUILTIN_ALIASES,
    BUILTIN_MODEL,
    embedded_model_path,
    normalize_name,
)

__all__ = ["HEALTH_PATH", "LlamaServerSetup", "find_binary", "missing_binary_message", "model_file"]

#: what llama-server answers 200 on once its model is loaded (503 while loading)
HEALTH_PATH = "/health"
#: the executable's name, as ``make setup`` links it beside this Python
BINARY = "llama-server"


def find_binary(setting: str, base_dir: Path) -> Path | None:
    """The llama-server executable ``backend.llama_server_binary`` names: a path (relative to
    the study file), or a name looked up beside this Python (where ``make setup`` links the
    one it built), then on ``PATH``; None where there is none."""
    if "/" in setting:
        path = (base_dir / setting).resolve()
        return path if path.is_file() else None
    beside = Path(sys.executable).parent / setting
    if beside.is_file():
        return beside
    found = shutil.which(setting)
    return Path(found) if found else None


def missing_binary_message(setting: str) -> str:
    """What to do when :func:`find_binary` finds nothing."""
    return (
        f"backend.llama_server_binary: no llama-server executable {setting!r} (looked beside "
        f"{sys.executable} and on PATH); run `make setup`, which builds it, or give its path"
    )


def model_file(model: str, extra: dict[str, str], base_dir: Path) -> Path | None:
    """The GGUF file of ``model``: one of ``backend.models`` (relative to the study file), or
    the built-in SmolLM2 model under any of its names; None when unknown."""
    wanted = normalize_name(model)
    for name, path in extra.items():
        if normalize_name(name) == wanted:
            return (base_dir / path).resolve()
    if wanted in {normalize_name(n) for n in (BUILTIN_MODEL, *BUILTIN_ALIASES)}:
        return embedded_model_path()
    return None


@dataclass(frozen=True)
class LlamaServerSetup:
    """Everything one llama-server process is started with."""

    binary: Path
    model: str  # the name agents ask for (``--alias``)
    gguf: Path
    parallel: int
    ctx_per_slot: int
    threads: int | None
    #: ``--slot-save-path``: without one llama-server refuses every slot action, the erase too
    slot_dir: Path

    def command(self, host: str, port: int) -> list[str]:
        """The command line: one model, ``parallel`` slots of ``ctx_per_slot`` tokens each,
        ``threads`` for both prefill and decode (None: llama.cpp's default), slots and
        metrics endpoints on."""
        cmd: Sequence[str] = [
            str(self.binary),
            "--model",
            str(self.gguf),
            "--alias",
            self.model,
            "--host",
            host,
            "--port",
            str(port),
            "--parallel",
            str(self.parallel),
            "--ctx-size",
            str(self.ctx_per_slot * self.parallel),
            "--slots",
            "--slot-save-path",
            str(self.slot_dir),
            "--metrics",
            # no prompt cache in RAM beside the slots: erasing every slot then empties every
            # cache, so each measured phase starts from the same state
            "--cache-ram",
            "0",
        ]
        if self.threads is not None:
            cmd = [*cmd, "--threads", str(self.threads), "--threads-batch", str(self.threads)]
        return list(cmd)
