"""A small reader for the header of a GGUF file: metadata and parameter count, no weights.

The registry uses it to describe a model (/api/tags, /api/show) without loading it into
llama.cpp. Only the header is read; large arrays (the tokenizer vocabulary) are skipped.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

__all__ = ["GGUFError", "GGUFHeader", "read_header"]

_MAGIC = b"GGUF"
#: Arrays longer than this are skipped (their value is recorded as None).
MAX_ARRAY_ITEMS = 64

# GGUF value types -> struct format of one scalar
_SCALARS: dict[int, str] = {
    0: "<B",  # uint8
    1: "<b",  # int8
    2: "<H",  # uint16
    3: "<h",  # int16
    4: "<I",  # uint32
    5: "<i",  # int32
    6: "<f",  # float32
    7: "<?",  # bool
    10: "<Q",  # uint64
    11: "<q",  # int64
    12: "<d",  # float64
}
_STRING, _ARRAY = 8, 9

#: llama.cpp's ``general.file_type`` (enum llama_ftype) -> the name Ollama shows.
FILE_TYPES: dict[int, str] = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    19: "IQ2_XXS",
    20: "IQ2_XS",
    21: "Q2_K_S",
    22: "IQ3_XS",
    23: "IQ3_XXS",
    24: "IQ1_S",
    25: "IQ4_NL",
    26: "IQ3_S",
    27: "IQ3_M",
    28: "IQ2_S",
    29: "IQ2_M",
    30: "IQ4_XS",
    31: "IQ1_M",
    32: "BF16",
    36: "TQ1_0",
    37: "TQ2_0",
}


class GGUFError(ValueError):
    """The file is not a GGUF file this reader understands."""


@dataclass(frozen=True)
class GGUFHeader:
    version: int
    metadata: dict[str, Any] = field(default_factory=dict)
    tensor_count: int = 0
    parameter_count: int = 0

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture", "") or "")

    def arch_value(self, key: str) -> Any:
        """``<architecture>.<key>``, e.g. ``arch_value("context_length")``."""
        return self.metadata.get(f"{self.architecture}.{key}")

    @property
    def context_length(self) -> int | None:
        value = self.arch_value("context_length")
        return int(value) if isinstance(value, int) and value > 0 else None

    @property
    def quantization_level(self) -> str:
        file_type = self.metadata.get("general.file_type")
        if isinstance(file_type, int):
            return FILE_TYPES.get(file_type, f"unknown ({file_type})")
        return "unknown"

    @property
    def parameter_size(self) -> str:
        """Ollama's short form ("135M", "7.6B"): the GGUF size label, else the tensor count."""
        label = self.metadata.get("general.size_label")
        if isinstance(label, str) and label:
            return label
        return format_parameter_count(self.parameter_count)

    @property
    def chat_template(self) -> str | None:
        template = self.metadata.get("tokenizer.chat_template")
        return template if isinstance(template, str) and template else None


def format_parameter_count(count: int) -> str:
    if count <= 0:
        return "unknown"
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= scale:
            value = count / scale
            text = f"{value:.1f}".rstrip("0").rstrip(".") if value < 100 else f"{value:.0f}"
            return text + unit
    return str(count)


class _Reader:
    def __init__(self, fh: BinaryIO) -> None:
        self.fh = fh

    def take(self, n: int) -> bytes:
        data = self.fh.read(n)
        if len(data) != n:
            raise GGUFError("unexpected end of file in the GGUF header")
        return data

    def scalar(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        n = self.scalar("<Q")
        if n > 1 << 30:
            raise GGUFError(f"implausible string length {n} in the GGUF header")
        return self.take(n).decode("utf-8", errors="replace")

    def skip_string(self) -> None:
        n = self.scalar("<Q")
        self.fh.seek(n, 1)

    def value(self, vtype: int) -> Any:
        if vtype in _SCALARS:
            return self.scalar(_SCALARS[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            etype, count = self.scalar("<I"), self.scalar("<Q")
            if count <= MAX_ARRAY_ITEMS:
                return [self.value(etype) for _ in range(count)]
            self.skip_array(etype, count)
            return None
        raise GGUFError(f"unknown GGUF value type {vtype}")

    def skip_array(self, etype: int, count: int) -> None:
        if etype in _SCALARS:
            self.fh.seek(struct.calcsize(_SCALARS[etype]) * count, 1)
        elif etype == _STRING:
            for _ in range(count):
                self.skip_string()
        else:
            for _ in range(count):
                self.value(etype)


def read_header(path: str | Path) -> GGUFHeader:
    """Read the metadata and tensor shapes of a GGUF file (v2 or v3)."""
    with open(path, "rb") as raw:
        fh = _Reader(raw)
        if fh.take(4) != _MAGIC:
            raise GGUFError(f"{path} is not a GGUF file (no GGUF magic number)")
        version = fh.scalar("<I")
        if version not in (2, 3):
            raise GGUFError(f"{path}: GGUF version {version} is not supported (2 or 3)")
        tensor_count, kv_count = fh.scalar("<Q"), fh.scalar("<Q")
        metadata: dict[str, Any] = {}
        for _ in range(kv_count):
            key = fh.string()
            metadata[key] = fh.value(fh.scalar("<I"))
        parameters = 0
        for _ in range(tensor_count):
            fh.skip_string()  # tensor name
            n_dims = fh.scalar("<I")
            dims = [fh.scalar("<Q") for _ in range(n_dims)]
            fh.take(4 + 8)  # ggml type, data offset
            parameters += math.prod(dims)
    return GGUFHeader(version, metadata, tensor_count, parameters)
