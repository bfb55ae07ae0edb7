"""Per-model scheduling like Ollama with OLLAMA_NUM_PARALLEL=1.

* One request at a time per model: a FIFO lock per model; a bounded number of requests may wait
  (``max_queue``, Ollama's OLLAMA_MAX_QUEUE), beyond that the answer is 503.
* Everything that touches llama.cpp (load, generate, unload) runs in a worker thread that holds
  the model's lock; the lock is released by that thread when it ends, so a request whose client
  went away keeps the model busy only until the worker notices (between tokens).
* Reload rule (Ollama's needsReload): a loaded model is reused only if the requested runner
  options, unset ones filled with the server defaults, equal the loaded ones.
* keep_alive: each request sets the model's expiry when it ends (negative: never; 0: unload
  right after the request); a background task unloads expired models.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from mabench.api.ollama import KeepAlive, RequestError
from mabench.servers.embedded.registry import ModelEntry, Registry
from mabench.servers.embedded.runner import Cancelled, Runner, RunnerConfig, RunnerDefaults

__all__ = [
    "QUEUE_FULL_MESSAGE",
    "Done",
    "Loaded",
    "LoadedModel",
    "Scheduler",
    "Text",
    "Ticket",
    "not_found",
]

QUEUE_FULL_MESSAGE = "server busy, please try again.  maximum pending requests exceeded"
DEFAULT_MAX_QUEUE = 512
EXPIRY_CHECK_S = 0.2

#: The work a request does with the loaded model, in the worker thread:
#: ``job(runner, emit_text, cancelled) -> result``.
Job = Callable[[Runner, Callable[[str], None], Callable[[], bool]], Any]


def not_found(name: str) -> RequestError:
    return RequestError(f"model '{name}' not found", 404)


# ---------------------------------------------------------------------------------------------
# Events a session yields
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Loaded:
    """The model is ready (``load_ns`` is 0 when the loaded one was reused)."""

    load_ns: int


@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class Done:
    result: Any


# ---------------------------------------------------------------------------------------------
# Slots
# ---------------------------------------------------------------------------------------------


class _FifoLock:
    """A FIFO lock with a synchronous try-acquire (asyncio.Lock has none)."""

    def __init__(self) -> None:
        self.held = False
        self._waiters: deque[asyncio.Future[None]] = deque()

    def try_acquire(self) -> bool:
        if self.held:
            return False
        self.held = True
        return True

    async def acquire(self) -> None:
        if self.try_acquire():
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # it was handed to us as we were cancelled: pass it on
            raise

    def release(self) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)  # handed over: stays held
                return
        self.held = False


@dataclass(frozen=True)
class LoadedModel:
    """A snapshot of a loaded model (replaced as a whole, so readers see a consistent one)."""

    runner: Runner
    loaded_at: float  # time.time()
    expires_at: float | None  # time.time() of the unload; None = never


class _Slot:
    def __init__(self, entry: ModelEntry) -> None:
        self.entry = entry
        self.lock = _FifoLock()
        self.loaded: LoadedModel | None = None

    def set_expiry(self, keep_alive: KeepAlive) -> None:
        loaded = self.loaded
        if loaded is not None:
            expires = None if keep_alive.seconds is None else time.time() + keep_alive.seconds
            self.loaded = LoadedModel(loaded.runner, loaded.loaded_at, expires)

    def unload(self) -> None:
        loaded, self.loaded = self.loaded, None
        if loaded is not None:
            loaded.runner.close()


class Ticket:
    """An admitted request: it holds its model's lock, or waits for it (counted in the queue)."""

    def __init__(self, scheduler: Scheduler, slot: _Slot, holds_lock: bool) -> None:
        self.scheduler = scheduler
        self.slot = slot
        self.holds_lock = holds_lock
        self.queued = not holds_lock
        self.used = False

    async def wait(self) -> None:
        try:
            if not self.holds_lock:
                await self.slot.lock.acquire()
                self.holds_lock = True
        finally:
            self.leave_queue()

    def leave_queue(self) -> None:
        if self.queued:
            self.queued = False
            self.scheduler._pending -= 1

    def discard(self) -> None:
        """Give up an admitted ticket that never ran (e.g. the client left before)."""
        self.leave_queue()
        if self.holds_lock and not self.used:
            self.holds_lock = False
            self.slot.lock.release()


# ---------------------------------------------------------------------------------------------
# Scheduler
# ---------------------------------------------------------------------------------------------


class Scheduler:
    def __init__(
        self,
        registry: Registry,
        defaults: RunnerDefaults | None = None,
        *,
        max_queue: int = DEFAULT_MAX_QUEUE,
    ) -> None:
        self.registry = registry
        self.defaults = defaults or RunnerDefaults()
        self.max_queue = max_queue
        self._slots: dict[str, _Slot] = {e.name: _Slot(e) for e in registry.entries()}
        self._pending = 0
        self._closing = threading.Event()
        self._workers: set[threading.Thread] = set()
        self._expiry_task: asyncio.Task[None] | None = None

    # -- admission ---------------------------------------------------------------------------

    def entry(self, name: str) -> ModelEntry:
        entry = self.registry.get(name)
        if entry is None:
            raise not_found(name)
        return entry

    def admit(self, name: str) -> Ticket:
        """Admit a request for ``name`` now, synchronously: 404 unknown, 503 queue full."""
        if self._closing.is_set():
            raise RequestError("server is shutting down", 503)
        slot = self._slots[self.entry(name).name]
        if slot.lock.try_acquire():
            return Ticket(self, slot, holds_lock=True)
        if self._pending >= self.max_queue:
            raise RequestError(QUEUE_FULL_MESSAGE, 503)
        self._pending += 1
        return Ticket(self, slot, holds_lock=False)

    @property
    def pending(self) -> int:
        return self._pending

    # -- sessions ----------------------------------------------------------------------------

    async def session(
        self,
        ticket: Ticket,
        options_config: RunnerConfig | None,
        keep_alive: KeepAlive,
        job: Job | None,
    ) -> AsyncIterator[Loaded | Text | Done]:
        """Run one request: wait for the model, (re)load it if needed, run ``job``.

        ``options_config`` None means "unload the model" (no job). Yields :class:`Loaded`,
        then :class:`Text` events, then :class:`Done`; errors are raised.
        """
        slot = ticket.slot
        await ticket.wait()
        ticket.used = True
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        cancel = threading.Event()

        def put(kind: str, value: Any) -> None:
            try:
                loop.call_soon_threadsafe(events.put_nowait, (kind, value))
            except RuntimeError:  # the event loop is gone: nobody listens any more
                cancel.set()

        def cancelled() -> bool:
            return cancel.is_set() or self._closing.is_set()

        def work() -> None:
            self._work(slot, options_config, keep_alive, job, put, cancelled, loop)

        self._spawn(work, f"mabench-{slot.entry.name}")
        try:
            while True:
                kind, value = await events.get()
                if kind == "error":
                    raise value
                if kind == "loaded":
                    yield Loaded(value)
                elif kind == "text":
                    yield Text(value)
                else:
                    yield Done(value)
                    return
        finally:
            cancel.set()  # the client is gone or we are done: stop the worker between tokens

    def _work(
        self,
        slot: _Slot,
        options_config: RunnerConfig | None,
        keep_alive: KeepAlive,
        job: Job | None,
        put: Callable[[str, Any], None],
        cancelled: Callable[[], bool],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        """In the worker thread: unload, or (re)load and run ``job``, reporting through
        ``put``; then keep the model for ``keep_alive`` (or unload it) and free the slot."""
        try:
            if options_config is None:
                slot.unload()
                put("done", None)
                return
            if self._closing.is_set():
                raise Cancelled()  # queued behind a generation when the signal came
            load_ns = self._ensure_loaded(slot, options_config)
            slot.set_expiry(keep_alive)  # provisional while running (as /api/ps shows)
            put("loaded", load_ns)
            result = None
            if job is not None:
                result = job(slot.loaded.runner, lambda text: put("text", text), cancelled)
            put("done", result)
        except BaseException as exc:
            put("error", exc)
        finally:
            try:
                if keep_alive.unload_now or self._closing.is_set():
                    slot.unload()
                else:
                    slot.set_expiry(keep_alive)
            finally:
                self._release_from_thread(loop, slot)

    def _ensure_loaded(self, slot: _Slot, config: RunnerConfig) -> int:
        """In the worker thread: reuse, or unload and load. Returns the load time (ns): 0 for
        a reuse, else everything the request waited for because of the (re)load: freeing the
        previous runner (its context and a garbage collection), loading the GGUF, building
        the chat template. Ollama's load_duration, which a client may subtract, so none of it
        may land in the time that follows."""
        loaded = slot.loaded
        if loaded is not None and loaded.runner.config == config:
            return 0
        start = time.perf_counter_ns()
        slot.unload()
        runner = Runner.load(slot.entry, config)
        slot.loaded = LoadedModel(runner, time.time(), None)
        return max(1, time.perf_counter_ns() - start)

    def _spawn(self, fn: Callable[[], None], name: str) -> None:
        def run() -> None:
            try:
                fn()
            finally:
                self._workers.discard(threading.current_thread())

        thread = threading.Thread(target=run, name=name, daemon=True)
        self._workers.add(thread)
        thread.start()

    @staticmethod
    def _release_from_thread(loop: asyncio.AbstractEventLoop, slot: _Slot) -> None:
        with contextlib.suppress(RuntimeError):  # loop closed: the process is exiting
            loop.call_soon_threadsafe(slot.lock.release)

    # -- loaded models -----------------------------------------------------------------------

    def loaded_models(self) -> list[tuple[ModelEntry, LoadedModel]]:
        return [(s.entry, s.loaded) for s in self._slots.values() if s.loaded is not None]

    async def expire_once(self) -> None:
        """Unload every idle model whose keep_alive has run out."""
        now = time.time()
        loop = asyncio.get_running_loop()
        for slot in self._slots.values():
            loaded = slot.loaded
            if loaded is None or loaded.expires_at is None or loaded.expires_at > now:
                continue
            if not slot.lock.try_acquire():
                continue  # busy: the running request sets a new expiry when it ends

            def unload(slot: _Slot = slot) -> None:
                try:
                    slot.unload()
                finally:
                    self._release_from_thread(loop, slot)

            self._spawn(unload, f"mabench-expire-{slot.entry.name}")

    async def _expiry_loop(self) -> None:
        while True:
            await asyncio.sleep(EXPIRY_CHECK_S)
            await self.expire_once()

    def start(self) -> None:
        if self._expiry_task is None:
            self._expiry_task = asyncio.get_running_loop().create_task(self._expiry_loop())

    # -- shutdown ----------------------------------------------------------------------------

    def begin_shutdown(self) -> None:
        """Thread- and signal-safe: running generations stop at their next token."""
        self._closing.set()

    @property
    def closing(self) -> bool:
        return self._closing.is_set()

    async def close(self, timeout_s: float = 3.0) -> bool:
        """Stop, wait for the workers (up to ``timeout_s``), free every model.

        Returns False if a worker was still inside llama.cpp when the time ran out (its model
        is then left to the process exit).
        """
        self.begin_shutdown()
        if self._expiry_task is not None:
            self._expiry_task.cancel()
        deadline = time.monotonic() + timeout_s
        while self._workers and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        clean = not self._workers
        for slot in self._slots.values():
            if not slot.lock.held or clean:
                slot.unload()
        return clean
