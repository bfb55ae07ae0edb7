"""The llama.cpp wrapper: load a GGUF, template a prompt, stream tokens, measure them.

One :class:`Runner` is one loaded ``llama_cpp.Llama``. It is not thread-safe: the scheduler
guarantees that one request at a time uses it, from a worker thread (never the event loop).

Metrics (nanoseconds, as Ollama reports them):

* ``prompt_eval_count``: the prompt's tokens. The KV cache is cleared before every request
  (``llm.reset()``), so the whole prompt is always evaluated and this is a real prefill.
* ``prompt_eval_duration``: llama.cpp's own prefill counter (``llama_perf_context`` ->
  ``t_p_eval_ms``, reset before each request) when it counted exactly the prompt's tokens;
  otherwise (a one-token prompt or tail batch is counted as a decode by llama.cpp) our own
  ``perf_counter_ns`` around the prefill calls.
* ``eval_count``: tokens sampled, counted here, the end-of-generation token included (as
  Ollama counts). llama.cpp's ``n_eval`` is one less: the last token is never decoded.
* ``eval_duration``: ``perf_counter_ns`` from the end of the prefill to the last token,
  i.e. the N samplings and N-1 decodes (llama.cpp's ``t_eval_ms`` omits the sampling).
"""

from __future__ import annotations

import codecs
import contextlib
import ctypes
import gc
import io
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import ModuleType

from mabench.api.ollama import Message, Options, OptionsError, RequestError
from mabench.servers.embedded.registry import ModelEntry

__all__ = [
    "DEFAULT_NUM_BATCH",
    "DEFAULT_NUM_CTX",
    "DEFAULT_NUM_GPU",
    "Cancelled",
    "GenerationResult",
    "LoadError",
    "PerfCounters",
    "Prompt",
    "Runner",
    "RunnerConfig",
    "RunnerDefaults",
    "Sampling",
    "default_num_thread",
]

DEFAULT_NUM_CTX = 4096  # Ollama's default context
DEFAULT_NUM_BATCH = 512
DEFAULT_NUM_GPU = -1  # Ollama: -1 = decide automatically; no effect on a CPU build
MAX_NUM_CTX = 1 << 20
MAX_NUM_THREAD = 256
_INT32_MAX = 2**31 - 1

# llama-cpp-python prints to fds 1/2 or swaps them out while loading: loads are serialized.
_LOAD_LOCK = threading.Lock()


def default_num_thread() -> int:
    """Half the cores: two servers side by side on a 2-core machine get one thread each."""
    return max(1, (os.cpu_count() or 1) // 2)


class LoadError(RuntimeError):
    """llama.cpp could not load the model (the message includes llama.cpp's own log tail)."""


class Cancelled(Exception):
    """The request was cancelled (client gone or server shutting down) between tokens."""


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunnerConfig:
    """The runner options a model is loaded with; a loaded model is reused only if equal."""

    num_ctx: int
    num_batch: int
    num_gpu: int
    main_gpu: int
    use_mmap: bool | None
    num_thread: int


@dataclass(frozen=True)
class RunnerDefaults:
    """Server-wide defaults for unset runner options (Ollama's api.DefaultOptions)."""

    num_ctx: int = DEFAULT_NUM_CTX
    num_batch: int = DEFAULT_NUM_BATCH
    num_gpu: int = DEFAULT_NUM_GPU
    main_gpu: int = 0
    use_mmap: bool | None = None
    num_thread: int = field(default_factory=default_num_thread)

    def resolve(self, options: Options) -> RunnerConfig:
        """Fill unset (or non-positive, meaning "auto") options with the defaults.

        Values llama.cpp cannot take are a 400 here rather than a crash in the worker.
        """

        def positive(key: str, value: int | None, default: int, maximum: int) -> int:
            if value is not None and value > maximum:
                raise OptionsError(f"option {key!r} must be at most {maximum}, got {value}")
            return value if value is not None and value > 0 else default

        def int32(key: str, value: int | None, default: int) -> int:
            if value is None:
                return default
            if not -(2**31) <= value < 2**31:
                raise OptionsError(f"option {key!r} is out of range, got {value}")
            return value

        return RunnerConfig(
            num_ctx=positive("num_ctx", options.num_ctx, self.num_ctx, MAX_NUM_CTX),
            num_batch=positive("num_batch", options.num_batch, self.num_batch, MAX_NUM_CTX),
            num_gpu=int32("num_gpu", options.num_gpu, self.num_gpu),
            main_gpu=int32("main_gpu", options.main_gpu, self.main_gpu),
            use_mmap=self.use_mmap if options.use_mmap is None else options.use_mmap,
            num_thread=positive("num_thread", options.num_thread, self.num_thread, MAX_NUM_THREAD),
        )


@dataclass(frozen=True)
class Sampling:
    """Per-request sampling options with Ollama's defaults (api.DefaultOptions)."""

    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.9
    min_p: float = 0.0
    typical_p: float = 1.0
    repeat_penalty: float = 1.1
    repeat_last_n: int = 64
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int = -1  # negative: a random seed
    num_predict: int = -1  # negative: until a stop or a full context; 0: prefill only
    stop: tuple[str, ...] = ()

    @classmethod
    def from_options(cls, options: Options) -> Sampling:
        values = {
            k: v
            for k, v in options.sampling().items()
            if k in cls.__dataclass_fields__ and k != "stop"
        }
        # llama.cpp takes 32-bit values: clamp counts, keep the seed's low 32 bits.
        for key in ("top_k", "repeat_last_n"):
            if key in values:
                values[key] = max(-1, min(values[key], _INT32_MAX))
        if values.get("seed", -1) >= 0:
            values["seed"] &= 0xFFFFFFFF
            if values["seed"] == 0xFFFFFFFF:  # llama.cpp's "random seed" value
                values["seed"] = 0xFFFFFFFE
        stop = tuple(s for s in (options.stop or ()) if s)
        return cls(**values, stop=stop)


@dataclass(frozen=True)
class Prompt:
    """What to evaluate: chat messages (templated) or a raw prompt (used as is)."""

    messages: tuple[Message, ...] = ()
    raw: str | None = None

    @classmethod
    def for_generate(cls, prompt: str, system: str | None, raw: bool) -> Prompt:
        if raw:
            return cls(raw=prompt)
        messages = [Message("system", system)] if system else []
        return cls(messages=(*messages, Message("user", prompt)))

    @classmethod
    def for_chat(cls, messages: Sequence[Message]) -> Prompt:
        return cls(messages=tuple(messages))


@dataclass(frozen=True)
class PerfCounters:
    """llama.cpp's ``llama_perf_context`` after one request (milliseconds as it reports)."""

    t_p_eval_ms: float
    n_p_eval: int
    t_eval_ms: float
    n_eval: int


@dataclass(frozen=True)
class GenerationResult:
    done_reason: str  # "stop" or "length"
    prompt_eval_count: int
    prompt_eval_ns: int
    eval_count: int
    eval_ns: int
    perf: PerfCounters
    prompt_ns_source: str  # "llama.cpp" or "wall"


def _utf8(text: str) -> bytes:
    """UTF-8 of ``text``; lone surrogates (JSON allows ``"\\ud800"``) become U+FFFD, as Go's
    JSON decoder makes them in Ollama."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        fixed = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        return fixed.encode("utf-8")


# ---------------------------------------------------------------------------------------------
# Stop strings
# ---------------------------------------------------------------------------------------------


class StopMatcher:
    """Streams text, holding back what could be the start of a stop string.

    ``feed`` returns the text safe to send and whether a stop string was hit (the stop string
    and everything after it are dropped, as Ollama does).
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [s for s in stops if s]
        self.pending = ""

    def feed(self, text: str) -> tuple[str, bool]:
        if not self.stops:
            return text, False
        self.pending += text
        hits = [i for i in (self.pending.find(s) for s in self.stops) if i >= 0]
        if hits:
            out, self.pending = self.pending[: min(hits)], ""
            return out, True
        hold = 0
        for s in self.stops:
            for n in range(min(len(s) - 1, len(self.pending)), 0, -1):
                if self.pending.endswith(s[:n]):
                    hold = max(hold, n)
                    break
        cut = len(self.pending) - hold
        out, self.pending = self.pending[:cut], self.pending[cut:]
        return out, False

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out


# ---------------------------------------------------------------------------------------------
# Runner
# ---------------------------------------------------------------------------------------------


def _llama_cpp() -> ModuleType:
    """llama_cpp, imported on first use, deliberately: importing it loads the native library,
    which ``mabench doctor`` must do in a child process only (a build that crashes this CPU
    then fails the child, and the doctor reports it), and which the server's tests of
    shapes, options and scheduling never need."""
    import llama_cpp

    return llama_cpp


def freeze_startup_heap() -> None:
    """Import llama.cpp's bindings now and freeze what the process holds (modules, the app:
    they live as long as it does). A server calls it once, ready to serve: the collection each
    unload runs (:meth:`Runner.close`) then scans only the objects made after start-up, ~0.2 ms
    instead of ~16 ms for a heap that holds llama_cpp and numpy (every run unloads)."""
    with contextlib.suppress(ImportError):  # the first load reports it, as without this
        _llama_cpp()
    gc.collect()
    gc.freeze()


class Runner:
    """One loaded model. Create with :meth:`load`; free with :meth:`close`."""

    def __init__(self, entry: ModelEntry, config: RunnerConfig, llm, load_ns: int) -> None:
        self._llama_cpp = _llama_cpp()
        self.entry = entry
        self.config = config
        self.llm = llm
        self.load_ns = load_ns
        self.n_ctx = int(llm.n_ctx())
        self._vocab = llm._model.vocab
        self._formatter = self._make_formatter()

    # -- lifecycle ---------------------------------------------------------------------------

    @classmethod
    def load(cls, entry: ModelEntry, config: RunnerConfig) -> Runner:
        """Load ``entry`` with ``config`` (blocking: call from a worker thread)."""
        llama_cpp = _llama_cpp()
        from llama_cpp import Llama  # lazy with llama_cpp itself (see _llama_cpp)
        from llama_cpp._logger import set_verbose

        n_ctx = config.num_ctx
        train_ctx = entry.header.context_length
        if train_ctx:
            n_ctx = min(n_ctx, train_ctx)
        gpu_layers = config.num_gpu if llama_cpp.llama_supports_gpu_offload() else 0
        log = io.StringIO()
        start = time.perf_counter_ns()
        # verbose=True keeps llama-cpp-python from redirecting the process's fds 1 and 2
        # (that would swallow other threads' output); its log goes to a buffer instead,
        # which also gives us llama.cpp's own explanation when a load fails.
        with _LOAD_LOCK, contextlib.redirect_stderr(log), contextlib.redirect_stdout(log):
            try:
                llm = Llama(
                    str(entry.path),
                    n_ctx=n_ctx,
                    n_batch=config.num_batch,
                    n_ubatch=config.num_batch,
                    n_threads=config.num_thread,
                    n_threads_batch=config.num_thread,
                    n_gpu_layers=gpu_layers,
                    main_gpu=config.main_gpu,
                    use_mmap=True if config.use_mmap is None else config.use_mmap,
                    verbose=True,
                )
            except Exception as exc:
                tail = "\n".join(log.getvalue().strip().splitlines()[-5:])
                raise LoadError(
                    f"llama.cpp could not load {entry.name} from {entry.path}: {exc}"
                    + (f"\n{tail}" if tail else "")
                ) from None
            finally:
                set_verbose(False)
        llm.verbose = False
        runner = cls(entry, config, llm, 0)
        runner.load_ns = time.perf_counter_ns() - start  # the chat template's build included
        return runner

    def close(self) -> None:
        """Free the model and its context now (not whenever the GC gets to it)."""
        llm, self.llm = self.llm, None
        if llm is not None:
            with contextlib.suppress(Exception):
                llm.close()
            del llm
            gc.collect()

    # -- prompt ------------------------------------------------------------------------------

    def _make_formatter(self):
        template = self.entry.header.chat_template or self.llm.metadata.get(
            "tokenizer.chat_template"
        )
        if not template:
            return None
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter  # lazy: see _llama_cpp

        def token_text(token: int) -> str:
            return self.llm._model.token_get_text(token) if token >= 0 else ""

        return Jinja2ChatFormatter(
            template=template,
            eos_token=token_text(self.llm.token_eos()),
            bos_token=token_text(self.llm.token_bos()),
            add_generation_prompt=True,
        )

    def render(self, prompt: Prompt) -> str:
        """The prompt text: the chat template applied to the messages, or the raw prompt."""
        if prompt.raw is not None:
            return prompt.raw
        messages = [m.to_json() for m in prompt.messages]
        if self._formatter is None:
            # No template in the GGUF: Ollama's fallback template is the bare prompt.
            return "".join(f"{m['content']}\n" for m in messages)
        try:
            return self._formatter(messages=messages).prompt
        except Exception as exc:  # jinja raise_exception(), e.g. roles in the wrong order
            raise RequestError(f"the model's chat template rejected the messages: {exc}") from None

    def tokenize(self, prompt: Prompt) -> list[int]:
        text = self.render(prompt)
        # A template already contains its special tokens (BOS too, when the model wants it);
        # a raw prompt gets the BOS token if the model's vocabulary asks for one.
        add_bos = prompt.raw is not None
        data = _utf8(text)
        return self.llm.tokenize(data, add_bos=add_bos, special=True)

    def _piece(self, token: int) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = self._llama_cpp.llama_token_to_piece(self._vocab, token, buf, 64, 0, False)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = self._llama_cpp.llama_token_to_piece(self._vocab, token, buf, -n, 0, False)
        return buf.raw[: max(n, 0)]

    # -- generation --------------------------------------------------------------------------

    def generate(
        self,
        prompt: Prompt,
        sampling: Sampling,
        emit: Callable[[str], None],
        cancelled: Callable[[], bool],
    ) -> GenerationResult:
        """Evaluate ``prompt`` and stream generated text to ``emit`` (one call per token that
        yields text). Raises :class:`Cancelled` when ``cancelled()`` turns true."""
        llama_cpp, llm = self._llama_cpp, self.llm
        if llm is None:
            raise RuntimeError("the model was unloaded")
        tokens = self.tokenize(prompt)
        if not tokens:
            raise RequestError("the prompt is empty after tokenization")
        if len(tokens) >= self.n_ctx:
            raise RequestError(
                f"the prompt is {len(tokens)} tokens but the context holds {self.n_ctx}: "
                "shorten the prompt or raise the num_ctx option"
            )

        llm.reset()  # no KV-cache prefix reuse: every request really evaluates its prompt
        llama_cpp.llama_perf_context_reset(llm.ctx)
        llm.set_seed(sampling.seed if sampling.seed >= 0 else llama_cpp.LLAMA_DEFAULT_SEED)
        repeat_last_n = sampling.repeat_last_n
        llm.last_n_tokens_size = self.n_ctx if repeat_last_n < 0 else min(repeat_last_n, self.n_ctx)
        # _init_sampler is llama-cpp-python's own sampler chain (penalties, top-k, typical,
        # top-p, min-p, temperature, dist/greedy); llama-cpp-python is pinned to 0.3.36.
        sampler_args = {
            "top_k": sampling.top_k,
            "top_p": sampling.top_p,
            "min_p": sampling.min_p,
            "typical_p": sampling.typical_p,
            "temp": sampling.temperature,
            "repeat_penalty": sampling.repeat_penalty,
            "frequency_penalty": sampling.frequency_penalty,
            "presence_penalty": sampling.presence_penalty,
        }
        llm._sampler = sampler = llm._init_sampler(**sampler_args)
        try:
            return self._run(tokens, sampling, emit, cancelled)
        finally:
            # Free the native chain now: llama-cpp-python's LlamaSampler is a reference cycle
            # (its free callback holds it), so dropping it leaves the chain and its candidate
            # buffer (n_vocab entries, 0.6 MB for SmolLM2) to the cyclic GC's next full
            # collection, and dozens of them piled up between two (benchmarks/memory.py).
            llm._sampler = None
            sampler.close()

    def _run(self, tokens, sampling, emit, cancelled) -> GenerationResult:
        llama_cpp, llm = self._llama_cpp, self.llm
        batch = max(1, int(llm.n_batch))  # num_batch, clamped to the context by llama.cpp
        t0 = time.perf_counter_ns()
        for i in range(0, len(tokens), batch):
            if cancelled():
                raise Cancelled()
            llm.eval(tokens[i : i + batch])
        # llama.cpp books a decode into its perf counters when it synchronizes (normally when
        # the logits are read); do it now so the prefill is booked even with num_predict 0.
        llama_cpp.llama_synchronize(llm.ctx)
        t1 = time.perf_counter_ns()

        limit = sampling.num_predict if sampling.num_predict >= 0 else None
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        stops = StopMatcher(sampling.stop)
        generated, done_reason, hit_stop = 0, "length", False
        t_last = t1
        while limit is None or generated < limit:
            if cancelled():
                raise Cancelled()
            if llm.n_tokens >= self.n_ctx:
                break  # the context is full: "length"
            token = llm.sample()
            generated += 1
            t_last = time.perf_counter_ns()
            if llama_cpp.llama_vocab_is_eog(self._vocab, token):
                done_reason = "stop"
                break
            text, hit_stop = stops.feed(decoder.decode(self._piece(token)))
            if text:
                emit(text)
            if hit_stop:
                done_reason = "stop"
                break
            if limit is not None and generated >= limit:
                break
            llm.eval([token])
        if not hit_stop:
            tail = decoder.decode(b"", final=True)
            text, hit_stop = stops.feed(tail) if tail else ("", False)
            text += "" if hit_stop else stops.flush()
            if text:
                emit(text)

        p = llama_cpp.llama_perf_context(llm.ctx)
        perf = PerfCounters(
            float(p.t_p_eval_ms), int(p.n_p_eval), float(p.t_eval_ms), int(p.n_eval)
        )
        if perf.n_p_eval == len(tokens) and perf.t_p_eval_ms > 0:
            prompt_ns, source = round(perf.t_p_eval_ms * 1e6), "llama.cpp"
        else:
            prompt_ns, source = t1 - t0, "wall"
        return GenerationResult(
            done_reason=done_reason,
            prompt_eval_count=len(tokens),
            prompt_eval_ns=max(1, prompt_ns),
            eval_count=generated,
            eval_ns=t_last - t1,
            perf=perf,
            prompt_ns_source=source,
        )
