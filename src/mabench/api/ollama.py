"""The Ollama HTTP API contract: one typed definition shared by our client and our server.

Mirrors ``api/types.go`` and ``docs/api.md`` of ollama/ollama for every field the benchmark
uses: requests are parsed and validated here (a :class:`RequestError` carries the HTTP status
and the exact message to send back); every response object a server sends is built here, in
Ollama's key order (the streamed chunks and the final one of a generation:
:class:`GenerationShape`; the models of ``/api/tags`` and ``/api/ps``: :class:`ModelSummary`;
``/api/show``: :func:`show_body`; ``/api/version``: :func:`version_body`; errors:
:func:`error_body`), and the final metrics of a generation are one :class:`Metrics` record in
nanoseconds, as Ollama reports them. Each server serialises these objects its own way.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

__all__ = [
    "DEFAULT_KEEP_ALIVE_S",
    "ROOT_TEXT",
    "RUNNER_OPTION_KEYS",
    "SAMPLING_OPTION_KEYS",
    "ChatRequest",
    "Endpoint",
    "GenerateRequest",
    "GenerationShape",
    "KeepAlive",
    "Message",
    "Metrics",
    "ModelDetails",
    "ModelSummary",
    "Options",
    "OptionsError",
    "RequestError",
    "ShowRequest",
    "error_body",
    "models_body",
    "parse_duration",
    "rfc3339",
    "show_body",
    "version_body",
]

DEFAULT_KEEP_ALIVE_S = 300.0  # Ollama's default: five minutes
#: what ``GET /`` answers while an Ollama server is up
ROOT_TEXT = "Ollama is running"
#: the two generation endpoints: ``/api/generate`` (``response``) and ``/api/chat`` (``message``)
Endpoint = Literal["generate", "chat"]


class RequestError(ValueError):
    """A request that must be answered with ``status`` and ``{"error": message}``."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class OptionsError(RequestError):
    """An ``options`` object with a wrong key or a wrongly typed value."""


# ---------------------------------------------------------------------------------------------
# Options (api.Options = api.Runner + sampling options)
# ---------------------------------------------------------------------------------------------

#: Options that configure the loaded model: a change forces a reload (Ollama's needsReload).
RUNNER_OPTION_KEYS: tuple[str, ...] = (
    "num_ctx",
    "num_batch",
    "num_gpu",
    "main_gpu",
    "use_mmap",
    "num_thread",
)

#: Options that only steer one generation: never a reload.
SAMPLING_OPTION_KEYS: tuple[str, ...] = (
    "num_keep",
    "seed",
    "num_predict",
    "top_k",
    "top_p",
    "min_p",
    "typical_p",
    "repeat_last_n",
    "temperature",
    "repeat_penalty",
    "presence_penalty",
    "frequency_penalty",
    "stop",
)

_INT, _FLOAT, _BOOL, _STRLIST = "integer", "number", "boolean", "array of strings"

_OPTION_TYPES: dict[str, str] = {
    "num_ctx": _INT,
    "num_batch": _INT,
    "num_gpu": _INT,
    "main_gpu": _INT,
    "use_mmap": _BOOL,
    "num_thread": _INT,
    "num_keep": _INT,
    "seed": _INT,
    "num_predict": _INT,
    "top_k": _INT,
    "top_p": _FLOAT,
    "min_p": _FLOAT,
    "typical_p": _FLOAT,
    "repeat_last_n": _INT,
    "temperature": _FLOAT,
    "repeat_penalty": _FLOAT,
    "presence_penalty": _FLOAT,
    "frequency_penalty": _FLOAT,
    "stop": _STRLIST,
}


def _coerce_option(key: str, value: Any) -> Any:
    kind = _OPTION_TYPES[key]
    if kind == _INT:
        # JSON has one number type; Ollama accepts integral numbers for integer options.
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise OptionsError(f"option {key!r} must be of type integer, got {value!r}")
        if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
            raise OptionsError(f"option {key!r} must be of type integer, got {value!r}")
        return int(value)
    if kind == _FLOAT:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise OptionsError(f"option {key!r} must be of type number, got {value!r}")
        if not math.isfinite(value):
            raise OptionsError(f"option {key!r} must be a finite number, got {value!r}")
        return float(value)
    if kind == _BOOL:
        if not isinstance(value, bool):
            raise OptionsError(f"option {key!r} must be of type boolean, got {value!r}")
        return value
    if isinstance(value, str):  # Ollama accepts a single stop string too
        return [value]
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise OptionsError(f"option {key!r} must be an array of strings, got {value!r}")
    return list(value)


@dataclass(frozen=True)
class Options:
    """Per-request model options. ``None`` means "not set": the server's default applies."""

    num_ctx: int | None = None
    num_batch: int | None = None
    num_gpu: int | None = None
    main_gpu: int | None = None
    use_mmap: bool | None = None
    num_thread: int | None = None
    num_keep: int | None = None
    seed: int | None = None
    num_predict: int | None = None
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    typical_p: float | None = None
    repeat_last_n: int | None = None
    temperature: float | None = None
    repeat_penalty: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    stop: list[str] | None = None

    @classmethod
    def from_mapping(cls, data: Any, *, unknown: str = "ignore") -> Options:
        """Parse a JSON ``options`` object.

        ``unknown="ignore"`` drops unknown keys as Ollama does (it logs a warning);
        ``unknown="error"`` rejects them, for study configs where a typo must not pass.
        """
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise OptionsError(f"options must be a JSON object, got {type(data).__name__}")
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key not in _OPTION_TYPES:
                if unknown == "error":
                    known = ", ".join(sorted(_OPTION_TYPES))
                    raise OptionsError(f"unknown option {key!r} (known options: {known})")
                continue
            if value is None:
                continue
            values[key] = _coerce_option(key, value)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """The options that are set, as a JSON object."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    def runner(self) -> dict[str, Any]:
        """The set runner options (those that decide whether a loaded model can be reused)."""
        return {k: v for k, v in self.to_dict().items() if k in RUNNER_OPTION_KEYS}

    def sampling(self) -> dict[str, Any]:
        return {k: v for k, v in self.to_dict().items() if k in SAMPLING_OPTION_KEYS}

    @staticmethod
    def known_keys() -> tuple[str, ...]:
        return tuple(f.name for f in fields(Options))


# ---------------------------------------------------------------------------------------------
# keep_alive (api.Duration)
# ---------------------------------------------------------------------------------------------

_DURATION_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_S = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


def parse_duration(text: str) -> float:
    """Parse a Go duration string (``"5m"``, ``"1h30m"``, ``"-1s"``, ``"0"``) into seconds."""
    s = text.strip()
    if not s:
        raise ValueError("empty duration")
    sign = 1.0
    if s[0] in "+-":
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return 0.0
    pos, total = 0, 0.0
    while pos < len(s):
        m = _DURATION_RE.match(s, pos)
        if not m:
            raise ValueError(f"time: invalid duration {text!r}")
        total += float(m.group(1)) * _UNIT_S[m.group(2)]
        pos = m.end()
    return sign * total


@dataclass(frozen=True)
class KeepAlive:
    """How long a model stays loaded after a request. ``seconds is None`` means forever."""

    seconds: float | None

    @classmethod
    def parse(cls, value: Any, default: float = DEFAULT_KEEP_ALIVE_S) -> KeepAlive:
        """Accept what Ollama accepts: seconds as a number, or a Go duration string.

        Negative means "keep loaded forever"; zero means "unload after this request".
        """
        if value is None:
            return cls(default)
        if isinstance(value, bool):
            raise RequestError(f"keep_alive must be a duration or a number, got {value!r}")
        if isinstance(value, int | float):
            seconds = float(value)
        elif isinstance(value, str):
            try:
                seconds = parse_duration(value)
            except ValueError as exc:
                raise RequestError(f"invalid keep_alive {value!r}: {exc}") from None
        else:
            raise RequestError(f"keep_alive must be a duration or a number, got {value!r}")
        if not math.isfinite(seconds):
            raise RequestError(f"keep_alive must be finite, got {value!r}")
        return cls(None if seconds < 0 else seconds)

    @property
    def unload_now(self) -> bool:
        return self.seconds == 0

    def to_json(self) -> float | str:
        """The value to send in a request (negative = forever)."""
        return -1 if self.seconds is None else self.seconds


# ---------------------------------------------------------------------------------------------
# Requests
# ---------------------------------------------------------------------------------------------


def _require_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise RequestError("request body must be a JSON object")
    return body


def _model_name(body: dict[str, Any]) -> str:
    model = body.get("model")
    if model is None or model == "":
        raise RequestError("model is required")
    if not isinstance(model, str):
        raise RequestError(f"model must be a string, got {model!r}")
    return model


def _optional_str(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise RequestError(f"{key} must be a string, got {value!r}")
    return value


def _stream_flag(body: dict[str, Any]) -> bool:
    stream = body.get("stream", True)
    if stream is None:
        return True
    if not isinstance(stream, bool):
        raise RequestError(f"stream must be a boolean, got {stream!r}")
    return stream


@dataclass(frozen=True)
class GenerateRequest:
    """``POST /api/generate``."""

    model: str
    prompt: str = ""
    system: str | None = None
    raw: bool = False
    stream: bool = True
    options: Options = field(default_factory=Options)
    keep_alive: KeepAlive = field(default_factory=lambda: KeepAlive(DEFAULT_KEEP_ALIVE_S))

    @classmethod
    def from_json(cls, body: Any, default_keep_alive: float = DEFAULT_KEEP_ALIVE_S):
        body = _require_object(body)
        prompt = _optional_str(body, "prompt") or ""
        raw = body.get("raw", False)
        if not isinstance(raw, bool):
            raise RequestError(f"raw must be a boolean, got {raw!r}")
        return cls(
            model=_model_name(body),
            prompt=prompt,
            system=_optional_str(body, "system"),
            raw=raw,
            stream=_stream_flag(body),
            options=Options.from_mapping(body.get("options")),
            keep_alive=KeepAlive.parse(body.get("keep_alive"), default_keep_alive),
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"model": self.model, "prompt": self.prompt, "stream": self.stream}
        if self.system is not None:
            out["system"] = self.system
        if self.raw:
            out["raw"] = True
        return out | _runner_fields(self.options, self.keep_alive)


def _runner_fields(options: Options, keep_alive: KeepAlive) -> dict[str, Any]:
    """A generation request's options (only when any is set) and keep-alive, in Ollama's order."""
    fields: dict[str, Any] = {"options": options.to_dict()} if options.to_dict() else {}
    return fields | {"keep_alive": keep_alive.to_json()}


@dataclass(frozen=True)
class Message:
    role: str
    content: str

    _ROLES = ("system", "user", "assistant", "tool")

    @classmethod
    def from_json(cls, item: Any, index: int) -> Message:
        if not isinstance(item, dict):
            raise RequestError(f"messages[{index}] must be an object")
        role, content = item.get("role"), item.get("content", "")
        if role not in cls._ROLES:
            raise RequestError(f"messages[{index}].role must be one of {list(cls._ROLES)}")
        if content is None:
            content = ""
        if not isinstance(content, str):
            raise RequestError(f"messages[{index}].content must be a string")
        return cls(role=role, content=content)

    def to_json(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


@dataclass(frozen=True)
class ChatRequest:
    """``POST /api/chat``."""

    model: str
    messages: tuple[Message, ...] = ()
    stream: bool = True
    options: Options = field(default_factory=Options)
    keep_alive: KeepAlive = field(default_factory=lambda: KeepAlive(DEFAULT_KEEP_ALIVE_S))

    @classmethod
    def from_json(cls, body: Any, default_keep_alive: float = DEFAULT_KEEP_ALIVE_S):
        body = _require_object(body)
        raw_messages = body.get("messages") or []
        if not isinstance(raw_messages, list):
            raise RequestError("messages must be an array")
        return cls(
            model=_model_name(body),
            messages=tuple(Message.from_json(m, i) for i, m in enumerate(raw_messages)),
            stream=_stream_flag(body),
            options=Options.from_mapping(body.get("options")),
            keep_alive=KeepAlive.parse(body.get("keep_alive"), default_keep_alive),
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "model": self.model,
            "messages": [m.to_json() for m in self.messages],
            "stream": self.stream,
        }
        return out | _runner_fields(self.options, self.keep_alive)


@dataclass(frozen=True)
class ShowRequest:
    """``POST /api/show`` (``name`` is the deprecated spelling of ``model``)."""

    model: str

    @classmethod
    def from_json(cls, body: Any) -> ShowRequest:
        body = _require_object(body)
        if body.get("model") in (None, "") and isinstance(body.get("name"), str):
            body = {**body, "model": body["name"]}
        return cls(model=_model_name(body))


# ---------------------------------------------------------------------------------------------
# Responses
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Metrics:
    """The final chunk's metrics (api.Metrics): durations in nanoseconds.

    The prompt's count and duration are None where a server leaves them out: Ollama up to
    v0.1.48 did for a prompt it found cached (ollama#2068, fixed by #5371), so what it
    evaluated is unknown, not zero."""

    total_duration: int = 0
    load_duration: int = 0
    prompt_eval_count: int | None = None
    prompt_eval_duration: int | None = None
    eval_count: int = 0
    eval_duration: int = 0

    #: fields a final chunk may leave out: Ollama's Go struct omits a zero load_duration
    #: (``omitempty``: no load was needed), and the prompt's count and duration (see above)
    _MISSING: ClassVar[dict[str, int | None]] = {
        "load_duration": 0,
        "prompt_eval_count": None,
        "prompt_eval_duration": None,
    }

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Metrics:
        """Read the metrics of a final chunk; a missing field the protocol needs, or a field
        that is not a non-negative integer, is an error."""
        values = {}
        for f in fields(cls):
            if f.name not in body and f.name in cls._MISSING:
                values[f.name] = cls._MISSING[f.name]
                continue
            value = body.get(f.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"final chunk has no valid {f.name!r} (got {value!r})")
            values[f.name] = value
        return cls(**values)

    def to_json(self) -> dict[str, int]:
        return asdict(self)

    @property
    def eval_rate(self) -> float | None:
        """Generated tokens per second, as ``ollama run --verbose`` prints it."""
        if self.eval_duration <= 0:
            return None
        return self.eval_count / (self.eval_duration / 1e9)


# ---------------------------------------------------------------------------------------------
# Responses: what servers send (each serialises these objects its own way)
# ---------------------------------------------------------------------------------------------


def rfc3339(moment: datetime | float | None = None) -> str:
    """``2024-06-04T14:38:31.837530Z`` (UTC; now unless given, a number is a Unix time), as
    Ollama's JSON times parse everywhere."""
    if moment is None:
        moment = datetime.now(UTC)
    elif isinstance(moment, int | float):
        moment = datetime.fromtimestamp(moment, tz=UTC)
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def error_body(message: str) -> dict[str, str]:
    """An error, as an HTTP error's body and as a stream's last line: ``{"error": message}``."""
    return {"error": message}


def version_body(version: str) -> dict[str, str]:
    """``GET /api/version``."""
    return {"version": version}


@dataclass(frozen=True)
class ModelDetails:
    """A model's ``details`` (api.ModelDetails)."""

    format: str
    family: str
    parameter_size: str
    quantization_level: str
    parent_model: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "parent_model": self.parent_model,
            "format": self.format,
            "family": self.family,
            "families": [self.family],
            "parameter_size": self.parameter_size,
            "quantization_level": self.quantization_level,
        }


@dataclass(frozen=True)
class ModelSummary:
    """One model as a server lists it: an entry of ``GET /api/tags`` (:meth:`tags_entry`), or,
    loaded, of ``GET /api/ps`` (:meth:`ps_entry`)."""

    name: str
    size: int  # bytes of the model file
    digest: str  # sha256, hex
    details: ModelDetails
    modified_at: str  # RFC 3339 (:func:`rfc3339`)

    def tags_entry(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model": self.name,
            "modified_at": self.modified_at,
            "size": self.size,
            "digest": self.digest,
            "details": self.details.to_json(),
        }

    def ps_entry(self, expires_at: str, context_length: int, size_vram: int = 0) -> dict[str, Any]:
        """Loaded until ``expires_at`` (RFC 3339) with a context of ``context_length`` tokens;
        ``size_vram``: bytes of it in GPU memory (0 on a CPU)."""
        return {
            "name": self.name,
            "model": self.name,
            "size": self.size,
            "digest": self.digest,
            "details": self.details.to_json(),
            "expires_at": expires_at,
            "size_vram": size_vram,
            "context_length": context_length,
        }


def models_body(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """``GET /api/tags`` or ``GET /api/ps``: the entries of :class:`ModelSummary`."""
    return {"models": entries}


def show_body(
    details: ModelDetails,
    model_info: dict[str, Any],
    modified_at: str,
    *,
    license_text: str = "",
    modelfile: str = "",
    parameters: str = "",
    template: str = "",
) -> dict[str, Any]:
    """``POST /api/show``: the details, the model's metadata (``model_info``: GGUF keys), when
    the model was modified (RFC 3339), its Modelfile strings; a completion model."""
    return {
        "license": license_text,
        "modelfile": modelfile,
        "parameters": parameters,
        "template": template,
        "details": details.to_json(),
        "model_info": model_info,
        "capabilities": ["completion"],
        "modified_at": modified_at,
    }


@dataclass(frozen=True)
class GenerationShape:
    """The objects of one ``/api/generate`` (text in ``response``) or ``/api/chat`` (text in
    ``message``) answer: the streamed chunks, the final chunk with its metrics, the answer to an
    empty prompt (``load``/``unload``). Each is stamped with the time it is built."""

    endpoint: Endpoint
    model: str  # echoed as the client spelled it, as Ollama does

    def _base(self) -> dict[str, Any]:
        return {"model": self.model, "created_at": rfc3339()}

    def _content(self, text: str) -> dict[str, Any]:
        if self.endpoint == "chat":
            return {"message": {"role": "assistant", "content": text}}
        return {"response": text}

    def chunk(self, text: str) -> dict[str, Any]:
        """A streamed piece of text."""
        return {**self._base(), **self._content(text), "done": False}

    def final(self, text: str, done_reason: str, metrics: Metrics | None) -> dict[str, Any]:
        """The last chunk of a stream (``text`` empty) or the whole answer; ``metrics`` None
        leaves them out (a broken server, as the simulated one plays it)."""
        body = {**self._base(), **self._content(text), "done": True, "done_reason": done_reason}
        if metrics is not None:
            body.update(metrics.to_json())
        return body

    def lifecycle(self, done_reason: str, total_ns: int, load_ns: int) -> dict[str, Any]:
        """The answer to an empty prompt: ``load`` or ``unload``, with how long the request and
        the load took."""
        body = {**self._base(), **self._content(""), "done": True, "done_reason": done_reason}
        body["total_duration"] = total_ns
        body["load_duration"] = load_ns
        return body
