"""The server pool of a study: start servers lazily, share them, stop them without leftovers.

The first job that needs the servers starts them; later jobs of the same invocation reuse
them; the invocation's end (``release``), or its death (the :mod:`mabench.servers.supervise`
watchdog), stops them. A state file records who owns which server processes, so that

- a second invocation never reuses servers silently: servers of a live owner are refused with
  an error naming it; servers of a dead owner are stale and are stopped, after checking that
  each PID still is the very process that was started (create time), never a foreign one;
- a port taken by another program is an error before any run (or a free port, when
  ``backend.port_fallback`` allows it);
- a server that died mid-study (crash, OOM, kill) is restarted for the next run;
- each config's servers run with the llama.cpp threads that config needs (embedded,
  ``num_thread: auto``): the CPUs this process may use divided among the servers the
  *config* uses, so a one-server config is not measured on half the machine; a server
  running with another thread count is restarted. Servers a config does not use may stay up
  idle (they are still unloaded before its runs).

Pool state is per host (``pool-<host>.json``): on a cluster, each node starts, checks and
stops only its own servers and never inspects or signals a PID that another host recorded.

``external`` studies start nothing: their URLs are only checked (``GET /`` for Ollama's API,
``GET /v1/models`` with the API key for OpenAI's).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from mabench.api.openai import MODELS_PATH
from mabench.config import LLAMA_SERVER_CTX_SIZE, ConfigSpec, ServerSpec, Study
from mabench.measure.environment import available_cpus
from mabench.measure.errors import ServerSetupError
from mabench.measure.records import write_json_atomic
from mabench.servers.embedded.registry import BUILTIN_ALIASES, BUILTIN_MODEL, normalize_name
from mabench.servers.llama_server import (
    HEALTH_PATH,
    LlamaServerSetup,
    find_binary,
    missing_binary_message,
    model_file,
)
from mabench.servers.net import answers, free_port, is_loopback, port_in_use, status_of
from mabench.servers.ownership import claimed_owner_pid
from mabench.servers.process import ServerStartError, start_logged, wait_answering


@dataclass(frozen=True)
class Owner:
    """The process whose life bounds the servers' lives."""

    pid: int
    create_time: float

    @classmethod
    def of(cls, pid: int) -> Owner:
        return cls(pid, psutil.Process(pid).create_time())

    @classmethod
    def current(cls) -> Owner:
        """The Snakemake that owns this process's servers (``MABENCH_OWNER_PID``, set by the
        Snakefile, see :func:`mabench.servers.ownership.claim_ownership`) or this process. A PID claimed on another host
        or in another Slurm job names no process here and is never looked up."""
        claimed = claimed_owner_pid()
        if claimed is not None:
            with suppress(psutil.Error):
                return cls.of(claimed)
        return cls.of(os.getpid())

    def alive(self) -> bool:
        try:
            proc = psutil.Process(self.pid)
            return (
                abs(proc.create_time() - self.create_time) < 0.01
                and proc.status() != psutil.STATUS_ZOMBIE
            )
        except psutil.Error:
            return False

    def describe(self) -> str:
        try:
            cmd = " ".join(psutil.Process(self.pid).cmdline())[:200]
        except psutil.Error:
            cmd = "?"
        return f"pid {self.pid} ({cmd})"


@dataclass(frozen=True)
class ServerProc:
    name: str
    url: str
    port: int
    pid: int  # the supervisor's pid
    create_time: float
    log: str
    threads: int | None = None  # llama.cpp threads (embedded); None: the server decides

    def alive(self) -> bool:
        return Owner(self.pid, self.create_time).alive()


def _port_owner(port: int) -> str:
    with suppress(psutil.Error, OSError):
        for conn in psutil.net_connections(kind="tcp"):
            if (
                conn.laddr
                and conn.laddr.port == port
                and conn.status == psutil.CONN_LISTEN
                and conn.pid
            ):
                return f"pid {conn.pid} ({' '.join(psutil.Process(conn.pid).cmdline())[:120]})"
    return "another program"


def _gone(proc: psutil.Process) -> bool:
    """Exited: not running any more, or a zombie waiting for a parent that is not us."""
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True


def _wait_gone(procs: list[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    """Wait until every process is gone; returns those still alive after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    alive = [p for p in procs if not _gone(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.02)
        alive = [p for p in alive if not _gone(p)]
    return alive


def _stop_trees(servers: Iterable[ServerProc], grace_s: float = 8.0) -> None:
    """Stop supervisors we started (each stops its server), then anything left of their trees.

    All are asked at once and waited for together, so stopping N servers takes as long as
    the slowest, not the sum.
    """
    roots: list[psutil.Process] = []
    children: list[psutil.Process] = []
    for s in servers:
        try:
            proc = psutil.Process(s.pid)
            if abs(proc.create_time() - s.create_time) >= 0.01:
                continue  # the PID was reused by a foreign process: never touch it
            children.extend(proc.children(recursive=True))
            proc.terminate()
            roots.append(proc)
        except psutil.Error:
            continue
    for stage, timeout_s in ((roots, grace_s), (children, 2.0)):
        for proc in _wait_gone(stage, timeout_s):
            with suppress(psutil.Error):
                proc.kill()


def _missing_keys(servers: Iterable[ServerSpec]) -> list[str]:
    return [
        f"servers[{i}].api_key_env: the variable {s.api_key_env} that should hold server "
        f"{s.name!r}'s API key is not set; export it and try again"
        for i, s in enumerate(servers)
        if s.api_key_env is not None and not os.environ.get(s.api_key_env)
    ]


def _check_answers(spec: ServerSpec, url: str, timeout_s: float) -> None:
    """An external server answers its API: ``GET /`` (Ollama) or ``GET /v1/models`` with its
    key (OpenAI API); else a :class:`ServerSetupError` saying what answered and what to do."""
    if spec.api == "openai":
        key = spec.api_key()
        headers = {"authorization": f"Bearer {key}"} if key else None
        path = MODELS_PATH
    else:
        headers, path = None, "/"
    status = status_of(url, path, headers, timeout_s)
    if status == 200:
        return
    if status in (401, 403):
        raise ServerSetupError(
            f"external server {spec.name!r} at {url} refuses GET {path} (HTTP {status}): "
            + (
                f"check the API key in {spec.api_key_env}"
                if spec.api_key_env
                else "it wants an API key: name its variable in servers[].api_key_env"
            )
        )
    what = "does not answer" if status is None else f"answers HTTP {status} to"
    raise ServerSetupError(
        f"external server {spec.name!r} at {url} {what} GET {path}; start it, or fix "
        "servers[].url" + ("" if spec.api == "openai" else " (or servers[].api: openai)")
    )


@contextmanager
def _flock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` for the duration of the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class ServerPool:
    """Servers of one study; see the module docstring for the guarantees."""

    def __init__(
        self, study: Study, state_dir: str | Path, log_dir: str | Path, owner: Owner | None = None
    ) -> None:
        self.study = study
        self.state_dir = Path(state_dir)
        self.log_dir = Path(log_dir)
        self.owner = owner or Owner.current()
        self.host = socket.gethostname()
        self.state_path = self.state_dir / f"pool-{self.host}.json"
        #: names of the servers the last :meth:`acquire` started (the others were reused)
        self.started: list[str] = []

    # -- state ---------------------------------------------------------------------------

    def _locked(self) -> contextlib.AbstractContextManager[None]:
        return _flock(self.state_dir / f"pool-{self.host}.lock")

    def _read(self) -> tuple[Owner, dict[str, ServerProc]] | None:
        try:
            data = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return None
        owner = Owner(data["owner"]["pid"], data["owner"]["create_time"])
        return owner, {s["name"]: ServerProc(**s) for s in data["servers"]}

    def _write(self, servers: dict[str, ServerProc]) -> None:
        write_json_atomic(
            self.state_path,
            {
                "study": self.study.name,
                "host": self.host,
                "backend": self.study.backend_kind,
                "owner": asdict(self.owner),
                "servers": [asdict(s) for s in servers.values()],
            },
        )

    # -- public --------------------------------------------------------------------------

    def exclusive(self) -> contextlib.AbstractContextManager[None]:
        """Hold the bench slot: no two measurements (runs, unloads) on one host ever overlap,
        whatever the scheduler does (the profile's ``bench_slot`` is the first line of defence).

        Servers the pool starts live on this host, so the slot is per host; ``external``
        servers are shared by every host, so their slot is one for the whole study."""
        if self.study.backend_kind == "external":
            return _flock(self.state_dir / "bench.lock")
        return _flock(self.state_dir / f"bench-{self.host}.lock")

    def processes(self) -> dict[str, ServerProc]:
        """The servers this host's pool runs now (empty for ``external``)."""
        state = self._read()
        return {} if state is None else state[1]

    def acquire(
        self, config: ConfigSpec | None = None, threads: int | None = None
    ) -> dict[str, str]:
        """URLs of the servers ``config`` uses, up with the threads it needs (or ``threads``
        each; started or restarted if not), plus the study's other servers that already run
        (idle). Without a config: every server of the study, the CPUs divided among all."""
        used = None if config is None else {a.server for a in config.agents}
        wanted = [s for s in self.study.servers if used is None or s.name in used]
        self.started = []
        if self.study.backend_kind == "external":
            return self._check_external(wanted)
        threads = threads or self.threads(len(wanted))
        with self._locked():
            servers = self._own_state()
            for spec in wanted:
                if self._ensure(servers, spec, threads):
                    self.started.append(spec.name)
                    self._write(servers)
            self._write(servers)
            idle = {
                name: s.url
                for name, s in servers.items()
                if name not in {w.name for w in wanted} and s.alive() and self._answers(s.url)
            }
            return {**{s.name: servers[s.name].url for s in wanted}, **idle}

    def restarter(self, config: ConfigSpec) -> Callable[[int | None], dict[str, str]] | None:
        """For servers that take their threads only when they start (llama-server): how a run
        restarts ``config``'s servers with other threads (None: the config's own), for its
        sequential baseline. None for the others, whose loads set their threads."""
        if self.study.backend_kind != "llama_server":
            return None
        return lambda threads: self.acquire(config, threads)

    def _own_state(self) -> dict[str, ServerProc]:
        """This owner's servers; a live foreign owner is an error, a dead one's are stopped."""
        state = self._read()
        if state is None:
            return {}
        owner, servers = state
        if owner == self.owner:
            return servers
        if owner.alive():
            raise ServerSetupError(
                f"the servers of study {self.study.name!r} belong to a running process, "
                f"{owner.describe()}; wait for it to finish or stop it ({self.state_path})"
            )
        print(
            f"mabench: stopping {len(servers)} stale server(s) left by dead process {owner.pid}",
            file=sys.stderr,
        )
        _stop_trees(servers.values())
        return {}

    def _ensure(
        self, servers: dict[str, ServerProc], spec: ServerSpec, threads: int | None
    ) -> bool:
        """Make ``spec``'s server run with ``threads``; True if it was (re)started."""
        current = servers.get(spec.name)
        if current is not None:
            up = current.alive() and self._answers(current.url)
            if up and current.threads == threads:
                return False
            why = "is down" if not up else f"runs {current.threads} threads, not {threads}"
            print(
                f"mabench: server {spec.name!r} ({current.url}) {why}; restarting it",
                file=sys.stderr,
            )
            _stop_trees([current])
        taken = {s.port for name, s in servers.items() if name != spec.name}
        # a restarted server keeps its port, so URLs handed out earlier stay right
        port = spec.port if spec.port is not None or current is None else current.port
        servers[spec.name] = self._start(spec, taken, threads, port)
        return True

    def _answers(self, url: str) -> bool:
        return answers(url, path=self.health_path)

    @property
    def health_path(self) -> str:
        """What a started server answers 200 on once it can serve (llama-server: /health)."""
        return HEALTH_PATH if self.study.backend_kind == "llama_server" else "/"

    def preflight(self) -> list[str]:
        """Problems that would stop the servers from starting or answering, found before any
        job runs: API key variables that are not set, and declared ports already taken by
        another program (ports of this study's own live servers are fine; none when the
        backend starts nothing or falls back to free ports)."""
        return _missing_keys(self.study.servers) + self._taken_ports() + self._llama_problems()

    def _llama_problems(self) -> list[str]:
        """A llama_server study's missing executable or GGUF files."""
        if self.study.backend_kind != "llama_server":
            return []
        problems = []
        for spec in self.study.servers:
            try:
                self._llama_setup(spec, None)
            except ServerSetupError as exc:
                problems.append(str(exc))
        return list(dict.fromkeys(problems))

    def _taken_ports(self) -> list[str]:
        if self.study.backend_kind == "external" or self.study.backend["port_fallback"]:
            return []
        state = self._read()
        ours = set()
        if state is not None and state[0].alive():
            ours = {s.port for s in state[1].values() if s.alive()}
        host = self.study.backend["host"]
        return [
            f"servers: port {spec.port} of server {spec.name!r} is already in use by "
            f"{_port_owner(spec.port)}; stop that program, choose another port in servers[].port, "
            "or set backend.port_fallback: true"
            for spec in self.study.servers
            if spec.port is not None and spec.port not in ours and port_in_use(spec.port, host)
        ]

    def release(self) -> int:
        """Stop the servers this owner started (or a dead owner left). Returns how many."""
        if self.study.backend_kind == "external":
            return 0
        with self._locked():
            state = self._read()
            if state is None:
                return 0
            owner, servers = state
            if owner != self.owner and owner.alive():
                return 0
            _stop_trees(servers.values())
            self.state_path.unlink(missing_ok=True)
            return len(servers)

    # -- internals -----------------------------------------------------------------------

    def _check_external(self, wanted: list[ServerSpec]) -> dict[str, str]:
        urls = {}
        for spec in wanted:
            url = (spec.url or "").rstrip("/")
            _check_answers(spec, url, float(self.study.timeouts["connect_s"]))
            urls[spec.name] = url
        return urls

    def threads(self, servers: int) -> int | None:
        """llama.cpp threads of each server when ``servers`` of them are measured together
        (embedded): ``backend.num_thread``, or with ``auto`` the CPUs this process may use
        divided among them, at least 1. None for other backends (the server decides)."""
        if self.study.backend_kind not in ("embedded", "llama_server"):
            return None
        setting = self.study.backend["num_thread"]
        if setting != "auto":
            return int(setting)
        return max(1, available_cpus() // max(1, servers))

    def threads_for(self, config: ConfigSpec) -> int | None:
        """The threads each server of ``config`` gets (see :meth:`threads`)."""
        return self.threads(len({a.server for a in config.agents}))

    def command(
        self, spec: ServerSpec, host: str, port: int, threads: int | None = None
    ) -> tuple[list[str], dict[str, str]]:
        """The server command line and environment for one server of this study's backend
        (``threads``: llama.cpp threads of an embedded server, default all servers')."""
        backend = self.study.backend
        env = dict(os.environ)
        if backend["kind"] == "llama_server":
            if threads is None:
                threads = self.threads(len(self.study.servers))
            return self._llama_setup(spec, threads).command(host, port), env
        if backend["kind"] == "embedded":
            cmd = [
                sys.executable,
                "-m",
                "mabench.servers.embedded",
                "--host",
                host,
                "--port",
                str(port),
            ]
            if threads is None:
                threads = self.threads(len(self.study.servers))
            cmd += ["--num-thread", str(threads)]
            return cmd + self._embedded_models(), env
        env["OLLAMA_HOST"] = f"{host}:{port}"
        env.update(self.study.server_settings(spec.name))
        if backend.get("ollama_models"):
            env["OLLAMA_MODELS"] = str((self.study.base_dir / backend["ollama_models"]).resolve())
        return [backend["ollama_binary"], "serve"], env

    def _llama_setup(self, spec: ServerSpec, threads: int | None) -> LlamaServerSetup:
        """How llama-server ``spec`` is started: the executable, the one model its agents
        ask for and its GGUF file, its slots, context and threads."""
        backend = self.study.backend
        setting = backend.get("llama_server_binary", "llama-server")
        binary = find_binary(setting, self.study.base_dir)
        if binary is None:
            raise ServerSetupError(missing_binary_message(setting))
        model = self.study.served_model(spec.name)
        gguf = model_file(model, backend.get("models", {}), self.study.base_dir)
        if gguf is None:
            raise ServerSetupError(
                f"server {spec.name!r}: no GGUF file for model {model!r}; llama-server loads a "
                "file: add it to backend.models (name: path), or use the built-in "
                f"{BUILTIN_MODEL}"
            )
        return LlamaServerSetup(
            binary=binary,
            model=model,
            gguf=gguf,
            parallel=self.study.parallel_of(spec.name),
            ctx_per_slot=int(backend.get("ctx_size", LLAMA_SERVER_CTX_SIZE)),
            threads=threads,
            slot_dir=self.log_dir / "slots" / spec.name,
        )

    def _embedded_models(self) -> list[str]:
        """``--model`` flags for the GGUF files some config uses (``backend.models``), and
        ``--no-builtin`` unless one uses the built-in model: a server registers (and hashes
        before it answers) only what the study measures. With none of them used, the built-in
        stays, so the server starts and the check step names the missing model."""
        used = {normalize_name(m) for m in self.study.used_models}
        flags = []
        for name, path in sorted(self.study.backend.get("models", {}).items()):
            if normalize_name(name) in used:
                flags += ["--model", f"{name}={(self.study.base_dir / path).resolve()}"]
        builtin = {normalize_name(n) for n in (BUILTIN_MODEL, *BUILTIN_ALIASES)}
        if flags and not used & builtin:
            flags.append("--no-builtin")
        return flags

    def _start(
        self, spec: ServerSpec, taken: set[int], threads: int | None, port: int | None = None
    ) -> ServerProc:
        """Start one server under its watchdog (on ``port`` if free, else as the study
        allows) and wait until it answers."""
        host = self.study.backend["host"]
        if not is_loopback(host):
            print(
                f"mabench: warning: servers will listen on non-loopback address {host}",
                file=sys.stderr,
            )
        port = self._port_for(spec, host, taken, port)
        cmd, env = self.command(spec, host, port, threads)
        log_path = self.log_dir / f"{spec.name}.log"
        if self.study.backend_kind == "llama_server":
            (self.log_dir / "slots" / spec.name).mkdir(parents=True, exist_ok=True)
        try:
            proc = start_logged(self._supervised(cmd), log_path, env=env, new_session=True)
        except ServerStartError as exc:
            raise ServerSetupError(f"server {spec.name!r}: {exc}") from None
        url_host = "127.0.0.1" if host in ("0.0.0.0", "") else host
        handle = ServerProc(
            spec.name,
            f"http://{url_host}:{port}",
            port,
            proc.pid,
            psutil.Process(proc.pid).create_time(),
            str(log_path),
            threads,
        )
        try:
            wait_answering(
                proc,
                handle.url,
                command=cmd,
                log_path=log_path,
                timeout_s=float(self.study.backend["startup_timeout_s"]),
                interval_s=0.1,
                path=self.health_path,
                name=f"server {spec.name!r}",
            )
        except ServerStartError as exc:
            _stop_trees([handle])
            raise ServerSetupError(str(exc)) from None
        return handle

    def _port_for(
        self, spec: ServerSpec, host: str, taken: set[int], wanted: int | None = None
    ) -> int:
        """The declared port (or ``wanted``: the port of the server being restarted), or a
        free one; a taken declared port is an error unless ``backend.port_fallback`` allows a
        free one instead (a restarted server's old port, still taken, gets a free one)."""
        port = wanted if wanted is not None else free_port(host)
        if port in taken or port_in_use(port, host):
            if spec.port is not None and not self.study.backend["port_fallback"]:
                raise ServerSetupError(
                    f"port {port} of server {spec.name!r} is already in use by {_port_owner(port)}; stop that "
                    "program, choose another port in servers[].port, or set backend.port_fallback: true"
                )
            port = free_port(host)
        return port

    def _supervised(self, cmd: list[str]) -> list[str]:
        """``cmd`` under :mod:`mabench.servers.supervise`: it dies with this pool's owner
        however the owner ends."""
        return [
            sys.executable,
            "-m",
            "mabench.servers.supervise",
            "--owner-pid",
            str(self.owner.pid),
            "--owner-ctime",
            repr(self.owner.create_time),
            "--",
            *cmd,
        ]
