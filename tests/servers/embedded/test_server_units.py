"""Fast checks of the pieces that need no running server."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path

import pytest

from mabench.api.ollama import Message, Options, OptionsError
from mabench.servers.embedded import cli
from mabench.servers.embedded.gguf import GGUFError, format_parameter_count, read_header
from mabench.servers.embedded.launch import ServerProcess
from mabench.servers.embedded.registry import Registry, RegistryError, normalize_name
from mabench.servers.embedded.runner import Prompt, RunnerDefaults, Sampling, StopMatcher
from mabench.servers.embedded.scheduler import Scheduler
from mabench.servers.process import ServerStartError

pytestmark = pytest.mark.timeout(60)


def test_normalize_name() -> None:
    assert normalize_name("smollm2") == "smollm2:latest"
    assert normalize_name("SmolLM2:135M") == "smollm2:135m"
    assert normalize_name("library/smollm2:135m") == "smollm2:135m"
    assert normalize_name("registry.ollama.ai/library/qwen") == "qwen:latest"
    assert normalize_name("me/model") == "me/model:latest"


def test_registry(tmp_path: Path, model_path: Path) -> None:
    reg = Registry()
    reg.add_builtin()
    assert reg.get("smollm2:135m") is reg.get("smollm2:135m-instruct-q4_1")
    assert reg.get("smollm2") is None
    assert reg.get(str(model_path)) is None
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "m.gguf").symlink_to(model_path)
    (tmp_path / "models.json").write_text(json.dumps({"a:1": "sub/m.gguf"}))
    reg.add_models_file(tmp_path / "models.json")
    assert reg.get("A:1").path == model_path.resolve()
    (tmp_path / "models.yaml").write_text("models:\n  b: sub/m.gguf\n")
    reg.add_models_file(tmp_path / "models.yaml")
    assert reg.get("b:latest") is not None
    for bad in ("- a\n- b\n", "a: [1]\n", "a: b: c\n"):
        (tmp_path / "bad.yaml").write_text(bad)
        with pytest.raises(RegistryError):
            reg.add_models_file(tmp_path / "bad.yaml")
    with pytest.raises(RegistryError, match="invalid model name"):
        reg.add("bad name", model_path)
    with pytest.raises(RegistryError, match="no such file"):
        reg.add_spec(f"x={tmp_path / 'nothing.gguf'}")


def test_gguf_header(model_path: Path, tmp_path: Path) -> None:
    header = read_header(model_path)
    assert header.architecture == "llama"
    assert header.context_length == 8192
    assert header.quantization_level == "Q4_1"
    assert header.parameter_size == "135M"
    assert 134_000_000 < header.parameter_count < 135_000_000
    assert "<|im_start|>" in header.chat_template
    (tmp_path / "x.gguf").write_bytes(b"GGUF\x01\x00\x00\x00")
    with pytest.raises(GGUFError):
        read_header(tmp_path / "x.gguf")
    assert format_parameter_count(7_615_000_000) == "7.6B"
    assert format_parameter_count(135_000_000) == "135M"


def test_stop_matcher() -> None:
    m = StopMatcher(["###", "END"])
    assert m.feed("abc#") == ("abc", False)
    assert m.feed("#") == ("", False)
    assert m.feed("x EN") == ("##x ", False)
    assert m.feed("D more") == ("", True)
    m = StopMatcher(["</s>"])
    assert m.feed("a</") == ("a", False)
    assert m.flush() == "</"
    assert StopMatcher([]).feed("anything") == ("anything", False)


def test_runner_defaults_and_sampling() -> None:
    d = RunnerDefaults(num_ctx=4096, num_batch=512, num_thread=1)
    assert d.resolve(Options()) == d.resolve(Options(num_ctx=4096, num_thread=0))
    assert d.resolve(Options(num_ctx=2048)).num_ctx == 2048
    with pytest.raises(OptionsError, match="num_thread"):
        d.resolve(Options(num_thread=10_000))
    with pytest.raises(OptionsError, match="num_gpu"):
        d.resolve(Options(num_gpu=2**40))
    s = Sampling.from_options(Options(seed=2**40 + 5, top_k=2**40, stop=["", "x"]))
    assert s.seed == 5 and s.top_k == 2**31 - 1 and s.stop == ("x",)
    assert Sampling.from_options(Options()).temperature == 0.8


def test_launcher_reports_a_server_that_dies(tmp_path: Path) -> None:
    server = ServerProcess(args=["--no-builtin"], log_path=tmp_path / "dies.log")
    with pytest.raises(ServerStartError, match="no models registered"), server:
        pass
    assert server.returncode == 2


def test_a_reload_is_timed_whole(model_path: Path) -> None:
    # A request that needs other runner options waits for the previous runner to be freed
    # (context, garbage collection), the GGUF to load and the chat template to be built:
    # the load time it reports covers all of it, so nothing of the reload is left in the
    # time after it. The bracket below adds two Python calls; 20 ms leaves room for a
    # preemption on a busy machine (the parts once left out cost ~70 ms on 2 cores).
    registry = Registry()
    entry = registry.add("m:1", model_path)
    scheduler = Scheduler(registry, RunnerDefaults(num_thread=1))
    slot = scheduler._slots[entry.name]
    first, second = (scheduler.defaults.resolve(Options(num_ctx=n)) for n in (512, 1024))
    assert scheduler._ensure_loaded(slot, first) > 0
    previous = slot.loaded.runner
    t0 = time.perf_counter_ns()
    load_ns = scheduler._ensure_loaded(slot, second)
    elapsed = time.perf_counter_ns() - t0
    assert previous.llm is None  # freed inside the reload
    assert slot.loaded.runner.config == second
    assert slot.loaded.runner.render(Prompt.for_chat([Message("user", "hi")]))  # template built
    assert 0 < load_ns <= elapsed
    assert elapsed - load_ns < 20_000_000
    assert scheduler._ensure_loaded(slot, second) == 0  # same options: reused, no load
    slot.unload()


def test_served_connections_send_without_waiting_for_acks() -> None:
    """The listening socket says TCP, so asyncio (as uvicorn serves it) turns Nagle off on
    every accepted connection: an answer written in two sends never waits for the client's
    delayed ACK (~40 ms per request and per streamed chunk)."""
    sock = cli._bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    seen: list[int] = []

    class Probe(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            conn = transport.get_extra_info("socket")
            seen.append(conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            transport.close()

    async def accept_one() -> None:
        server = await asyncio.get_running_loop().create_server(Probe, sock=sock)
        async with server:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            while not seen:
                await asyncio.sleep(0.01)
            writer.close()

    asyncio.run(asyncio.wait_for(accept_one(), 10))
    assert seen and seen[0] != 0
