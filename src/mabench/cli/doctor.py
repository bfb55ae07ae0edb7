"""``mabench doctor``: check that the embedded model really generates on this CPU.

The generation runs in a child process, so a llama.cpp build that crashes on this CPU (SIGILL
from a ``-march=native`` build on a VM that advertises instructions it cannot run) is reported
instead of killing the doctor. Exit code 0 when a generation worked, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from mabench.api.ollama import Options
from mabench.servers.embedded.registry import ModelEntry, RegistryError, embedded_model_path
from mabench.servers.embedded.runner import (
    Prompt,
    Runner,
    RunnerDefaults,
    Sampling,
    default_num_thread,
)

__all__ = ["configure", "main"]

PORTABLE_BUILD = (
    'CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON" '
    "pip install --no-cache-dir --force-reinstall llama-cpp-python==0.3.36"
)
_PROMPT = "Name three colours of the rainbow."


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model-path", help="a GGUF file to try (default: the built-in smollm2:135m)"
    )
    parser.add_argument("--tokens", type=int, default=32, help="tokens to generate (32)")
    parser.add_argument(
        "--num-thread", type=int, default=None, help="llama.cpp threads (default: half the cores)"
    )
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds allowed (180)")


def _child(path: str, tokens: int, threads: int) -> None:
    """In the child process: load, generate, print one JSON line with the measurements."""

    try:
        entry = ModelEntry(name="doctor", path=Path(path))
        config = RunnerDefaults(num_thread=threads).resolve(Options())
        runner = Runner.load(entry, config)
        pieces: list[str] = []
        start = time.perf_counter_ns()
        result = runner.generate(
            Prompt.for_generate(_PROMPT, None, raw=False),
            Sampling(temperature=0.0, num_predict=tokens),
            pieces.append,
            lambda: False,
        )
        wall_ns = time.perf_counter_ns() - start
        runner.close()
    except Exception as exc:
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
        raise SystemExit(1) from None
    print(
        json.dumps(
            {
                "load_ns": runner.load_ns,
                "n_ctx": runner.n_ctx,
                "prompt_tokens": result.prompt_eval_count,
                "prompt_ns": result.prompt_eval_ns,
                "eval_tokens": result.eval_count,
                "eval_ns": result.eval_ns,
                "wall_ns": wall_ns,
                "text": "".join(pieces),
            }
        )
    )


def _fail(message: str) -> int:
    print(f"mabench doctor: FAILED: {message}", file=sys.stderr)
    return 1


class _Failed(Exception):
    """What the doctor found wrong, worded for the user."""


def main(args: argparse.Namespace) -> int:
    try:
        path = _model_file(args.model_path)
        llama_version = _llama_version()
        threads = args.num_thread or default_num_thread()
        print(f"model:            {path}")
        print(f"llama-cpp-python: {llama_version}")
        print(f"threads:          {threads}")
        report = _generate_in_child(path, args.tokens, threads, args.timeout)
    except _Failed as exc:
        return _fail(str(exc))
    eval_rate = report["eval_tokens"] / max(report["eval_ns"], 1) * 1e9
    prompt_rate = report["prompt_tokens"] / max(report["prompt_ns"], 1) * 1e9
    print(f"load:             {report['load_ns'] / 1e6:.0f} ms (context {report['n_ctx']})")
    print(f"prefill:          {report['prompt_tokens']} tokens, {prompt_rate:.1f} tokens/s")
    print(f"generation:       {report['eval_tokens']} tokens, {eval_rate:.1f} tokens/s")
    print(f"text:             {report['text'].strip()[:200]!r}")
    print("mabench doctor: OK")
    return 0


def _model_file(given: str | None) -> Path:
    try:
        path = Path(given) if given else embedded_model_path()
    except RegistryError as exc:
        raise _Failed(str(exc)) from None
    if not path.is_file():
        raise _Failed(f"no such model file: {path}")
    with open(path, "rb") as fh:
        if fh.read(4) != b"GGUF":
            raise _Failed(f"{path} is not a GGUF file")
    return path


def _llama_version() -> str:
    try:
        return metadata.version("llama-cpp-python")
    except metadata.PackageNotFoundError:
        raise _Failed(
            f"llama-cpp-python is not installed; install it with:\n  {PORTABLE_BUILD}"
        ) from None


def _generate_in_child(path: Path, tokens: int, threads: int, timeout: float) -> dict[str, Any]:
    """Load and generate in a child process, so that a crash (SIGILL) is reported, not suffered."""
    code = "import sys; from mabench.cli.doctor import _child; _child(sys.argv[1], *map(int, sys.argv[2:]))"
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code, str(path), str(tokens), str(threads)],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        raise _Failed(
            f"no answer within {timeout:.0f} s: the CPU is very slow or overloaded"
        ) from None
    if proc.returncode < 0:
        raise _Failed(_crash_message(-proc.returncode))
    if proc.returncode != 0:
        try:
            message = json.loads(proc.stdout.strip().splitlines()[-1])["error"]
        except (ValueError, IndexError, KeyError, TypeError):
            message = "\n".join(proc.stderr.strip().splitlines()[-8:])
        raise _Failed(f"the generation failed (exit code {proc.returncode}): {message}")
    try:
        report = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise _Failed(f"unexpected output from the generation: {proc.stdout[-500:]!r}") from None
    if report["eval_tokens"] <= 0:
        raise _Failed("the model loaded but generated no token")
    return report


def _crash_message(signum: int) -> str:
    hint = ""
    if signum == signal.SIGILL:
        hint = (
            "\nllama.cpp was built for instructions this CPU cannot execute "
            "(a -march=native build; on VMs often AMX). Rebuild it portably:\n  " + PORTABLE_BUILD
        )
    return f"the generation crashed with {signal.Signals(signum).name}{hint}"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="mabench doctor", description=__doc__.splitlines()[0])
    configure(parser)
    raise SystemExit(main(parser.parse_args()))
