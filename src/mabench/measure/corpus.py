"""The corpus the agents analyse: real benchmark result files, summarised deterministically.

The original study's agents analysed an empty folder ("0 files"). Ours read a folder in the
TR110 layout (the bundled TR110 dataset by default), take an evenly spaced, sorted sample of
its run files and summarise each in one line. Same folder and sample size: same text, byte for
byte, so every run of a study sends the same prompts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from mabench.measure.errors import MabenchError


class CorpusError(MabenchError):
    """The corpus folder is missing, empty or unreadable."""


@dataclass(frozen=True)
class Corpus:
    root: Path
    n_files: int
    n_configs: int
    sample: tuple[str, ...]
    summary: str


def bundled_tr110() -> Path:
    return Path(str(resources.files("mabench").joinpath("datasets", "data", "tr110")))


def _line(path: Path, root: Path) -> str:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        s = data["summary"]
        coll, ins = data["collector"]["aggregate_metrics"], data["insight"]["aggregate_metrics"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CorpusError(f"{path}: not a TR110 metrics.json ({exc})") from None
    config = path.parent.parent.name.split("_test_")[-1]
    return (
        f"- test{config} run {s['run_number']}: speedup {s['concurrency_speedup']:.2f}x; "
        f"collector {coll['average_tokens_per_second']:.1f} tok/s, TTFT {coll['average_ttft_ms']:.0f} ms; "
        f"insight {ins['average_tokens_per_second']:.1f} tok/s, TTFT {ins['average_ttft_ms']:.0f} ms"
    )


def load_corpus(path: str | Path | None = None, files: int = 4) -> Corpus:
    """Summarise ``files`` run files sampled evenly from a TR110-layout folder."""
    root = Path(path) if path is not None else bundled_tr110()
    if not root.is_dir():
        raise CorpusError(f"corpus folder {root} does not exist")
    runs = sorted(root.glob("*/run_*/metrics.json"))
    if not runs:
        raise CorpusError(
            f"corpus folder {root} holds no run files (*/run_*/metrics.json); the agents would "
            "analyse nothing. Point corpus.path at a folder in TR110 layout."
        )
    n = min(files, len(runs))
    picks = [runs[(i * len(runs)) // n] for i in range(n)]
    configs = {p.parent.parent.name for p in runs}
    header = (
        f"Benchmark corpus: {len(runs)} runs of {len(configs)} configurations "
        f"(two agents, two Ollama servers). Sample of {n}:"
    )
    summary = "\n".join([header, *(_line(p, root) for p in picks)])
    return Corpus(
        root=root,
        n_files=len(runs),
        n_configs=len(configs),
        sample=tuple(str(p.relative_to(root)) for p in picks),
        summary=summary,
    )
