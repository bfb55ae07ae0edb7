"""The report's figures by name and title, and the manifest the figures rule writes beside them.

What the report needs to know of the figures, without drawing any: :mod:`mabench.analysis.plots`
draws them (and imports matplotlib); the report only reads ``figures.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: figure name -> title (names are the PNG stems and the caption file stems)
FIGURES: dict[str, str] = {
    "efficiency_distribution": "Distribution of run efficiency",
    "config_efficiency": "Mean efficiency per config with the 95 % t-interval of its runs",
    "speedup_by_scenario": "Speedup by scenario",
    "seed_vs_true": "Seed formula vs true efficiency, per run",
    "ttft_split": "Time to first token and its server-side split",
    "agent_throughput": "Per-agent throughput, solo vs concurrent",
    "slowdown": "Per-agent slowdown (concurrent wall / solo wall)",
    "run_timeline": "Timeline of one run: when each agent's calls ran",
    "topology_comparison": "Efficiency by topology",
    "latency": "Latency distributions per call, solo vs concurrent",
    "scaling_speedup": "True speedup S(N) by the number of agents, with Amdahl and USL fits",
    "scaling_efficiency": "Per-agent efficiency eta(N) = S(N) / N by the number of agents",
}

MANIFEST = "figures.json"


def write_manifest(figures_dir: str | Path, entries: list[dict[str, Any]]) -> None:
    """One entry per figure: name, title, status (made/skipped), file (made only), note."""
    (Path(figures_dir) / MANIFEST).write_text(json.dumps(entries, indent=1) + "\n")


def read_manifest(figures_dir: str | Path) -> list[dict[str, Any]]:
    """The manifest in ``figures_dir``; every figure skipped if the figures were not made."""
    path = Path(figures_dir) / MANIFEST
    if not path.exists():
        return [
            {
                "name": n,
                "title": t,
                "status": "skipped",
                "file": None,
                "note": "figures were not generated",
            }
            for n, t in FIGURES.items()
        ]
    return json.loads(path.read_text())
