"""A generation frees what it allocated when it ends, not when the garbage collector gets to it
(the memory benchmark's "the server must not grow with the requests it served")."""

from __future__ import annotations

import ctypes
import gc
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from llama_cpp._internals import LlamaSampler

from mabench.api.ollama import Options
from mabench.servers.embedded.registry import Registry
from mabench.servers.embedded.runner import Prompt, Runner, RunnerDefaults, Sampling

REQUESTS = 20


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _malloc_in_use() -> int:
    """Bytes the C heap has handed out and not had back (glibc's ``mallinfo2``)."""
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    info = libc.mallinfo2()
    return info.uordblks + info.hblkhd


@pytest.fixture(scope="module")
def runner(model_path: Path) -> Iterator[Runner]:
    registry = Registry()
    entry = registry.add("m:1", model_path)
    runner = Runner.load(entry, RunnerDefaults(num_thread=1).resolve(Options(num_ctx=512)))
    yield runner
    runner.close()


def _open_samplers() -> int:
    return sum(1 for o in gc.get_objects() if isinstance(o, LlamaSampler) and o.sampler)


def test_a_generation_frees_its_sampler_without_the_gc(runner: Runner) -> None:
    # Each request builds a llama.cpp sampler chain whose candidate buffer holds one entry
    # per vocabulary token (12 bytes each). With the cyclic GC off, only what a request frees
    # itself is freed: REQUESTS left-over chains would hold REQUESTS such buffers, half of
    # that is the bound (the first request's allocations, caches filling, are not counted).
    prompt = Prompt.for_generate("Say hi.", None, False)
    sampling = Sampling(num_predict=2, seed=1)
    buffer = runner.llm.n_vocab() * 12
    runner.generate(prompt, sampling, lambda _: None, lambda: False)
    gc.collect()
    gc.disable()
    try:
        before = _malloc_in_use()
        for _ in range(REQUESTS):
            runner.generate(prompt, sampling, lambda _: None, lambda: False)
        grown = _malloc_in_use() - before
        assert _open_samplers() == 0
        assert grown < REQUESTS * buffer / 2, (grown, buffer)
    finally:
        gc.enable()


def test_after_start_up_an_unload_collects_only_what_came_after():
    """The server freezes its start-up heap (llama_cpp's bindings imported): the full collection
    each unload runs then scans what the server made since, not the ~40k objects of its
    modules (llama_cpp's and numpy's included)."""
    script = (
        "import gc, json, sys\n"
        "import mabench.servers.embedded.app\n"
        "from mabench.servers.embedded.runner import freeze_startup_heap\n"
        "before = len(gc.get_objects())\n"
        "freeze_startup_heap()\n"
        "print(json.dumps({'before': before, 'after': len(gc.get_objects()),\n"
        "  'frozen': gc.get_freeze_count(), 'llama_cpp': 'llama_cpp' in sys.modules}))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    seen = json.loads(proc.stdout)
    assert seen["llama_cpp"]
    assert seen["frozen"] > seen["before"]  # llama_cpp's and numpy's objects included
    assert seen["after"] < 1000 < seen["before"]
