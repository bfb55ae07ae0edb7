"""One rule job as the job host receives it, and where a host listens."""

from __future__ import annotations

import json
import os
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

#: the steps a host runs (see :mod:`mabench.jobs.steps`)
KINDS = ("start_servers", "unload", "run")
#: the first byte of a connection that asks the host to stop (a job's carries its streams)
STOP = b"S"

#: a length-prefixed frame: 4-byte big-endian length, then that many bytes of UTF-8 JSON
_LENGTH = struct.Struct(">I")
MAX_FRAME = 16 * 1024 * 1024


@dataclass(frozen=True)
class JobRequest:
    """What a rule script knows of its job: the rule's kind, Snakemake's config, wildcards,
    named input files, output and log files and attempt; and what makes the host's child
    behave as the script's process: its working directory and environment (its standard
    streams travel beside the request, see :func:`mabench.jobs.client.forward`)."""

    kind: str
    config: dict[str, Any]
    wildcards: dict[str, str]
    output: list[str]
    log: list[str]
    input: dict[str, str] = field(default_factory=dict)
    attempt: int = 1
    cwd: str = field(default_factory=os.getcwd)
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown job kind {self.kind!r}; one of {', '.join(KINDS)}")

    @classmethod
    def of_rule(cls, kind: str, job: Any) -> JobRequest:
        """The request of a rule script's job: ``job`` is the ``snakemake`` object Snakemake
        gives the script (its named inputs, wildcards and lists of files, its config, and the
        ``attempt`` resource where the rule declares one)."""
        return cls(
            kind=kind,
            config=dict(job.config),
            wildcards=dict(job.wildcards.items()),
            input=dict(job.input.items()),
            output=list(job.output),
            log=list(job.log),
            attempt=int(job.resources.get("attempt", 1)),
        )

    def encode(self) -> bytes:
        return frame(asdict(self))

    @classmethod
    def decode(cls, payload: bytes) -> JobRequest:
        return cls(**json.loads(payload))


def frame(message: dict[str, Any]) -> bytes:
    body = json.dumps(message, separators=(",", ":")).encode()
    if len(body) > MAX_FRAME:
        raise ValueError(f"job message of {len(body)} bytes exceeds {MAX_FRAME}")
    return _LENGTH.pack(len(body)) + body


def frame_length(header: bytes) -> int:
    (length,) = _LENGTH.unpack(header)
    if length > MAX_FRAME:
        raise ValueError(f"job message of {length} bytes exceeds {MAX_FRAME}")
    return length


HEADER_SIZE = _LENGTH.size


def address(owner_pid: int) -> str | None:
    """The socket of the job host owned by process ``owner_pid``, or None where there can be
    none (no such process, or no Linux ``/proc``).

    In Linux's abstract namespace: no file to leave behind or to clash on a shared file
    system, and each cluster node has its own. Named by the owner's PID and start time (in
    clock ticks since boot, from ``/proc``), so a host is never reached by another
    invocation, even one that reuses the PID."""
    try:
        stat = Path(f"/proc/{owner_pid}/stat").read_text()
    except OSError:
        return None
    # the fields after the command name (which may hold spaces and parentheses); 22nd: starttime
    started = stat.rsplit(")", 1)[-1].split()[19]
    return f"\0mabench-jobs-{owner_pid}-{started}"
