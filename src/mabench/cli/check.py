"""``mabench check``: measure servers you already run, without writing a study file.

    mabench check --url http://host:11434 [--url ...] [--api openai] [--agents 4] [--parallel 4]

It checks every URL, generates a study (``external`` backend: nothing is started; agents
spread over the servers in turn, each with TR114's two-call workloads), writes it to
``results/<study>/study.yaml``, runs it through the same Snakemake workflow as any study,
and prints the headline: true versus seed efficiency, slowdown and TTFT. The full technical
report is where it says.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from mabench.config import ConfigError, Study, study_from_dict
from mabench.measure.apis import inventory, sync_client
from mabench.measure.client import Timeouts
from mabench.measure.errors import MabenchError
from mabench.servers.pool import ServerPool
from mabench.steps.rules import StudyPaths

__all__ = ["build_study", "configure", "headline", "main"]

#: the checkout holding the Snakefile (this file is src/mabench/cli/check.py)
PROJECT = Path(__file__).resolve().parents[3]
WORKLOADS = ("collector", "insight")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url", action="append", required=True, help="a server to measure (repeat for more)"
    )
    parser.add_argument(
        "--api",
        choices=("ollama", "openai"),
        default="ollama",
        help="the API the servers speak (openai: /v1/chat/completions)",
    )
    parser.add_argument(
        "--agents",
        type=int,
        help="agents at once, spread over the URLs (default: one per URL, 2 at least)",
    )
    parser.add_argument("--model", help="model to measure (default: the one the servers serve)")
    parser.add_argument("--runs", type=int, default=3, help="runs (solo + concurrent phase each)")
    parser.add_argument("--num-predict", type=int, default=40, help="tokens per call at most")
    parser.add_argument(
        "--api-key-env", metavar="VAR", help="openai: environment variable holding the API key"
    )
    parser.add_argument(
        "--baseline",
        choices=("none", "solo"),
        default="none",
        help="solo: each server has the whole machine (e.g. one per GPU box), so an agent alone "
        "on its server is what one after another would take, and true efficiency is known; "
        "none (default): the harness cannot see how the servers share the machine, so only "
        "interference (alone on its server vs together) is",
    )
    parser.add_argument(
        "--parallel",
        type=int,
        metavar="N",
        help="requests each server serves at once, as you started it (llama-server's "
        "--parallel, OLLAMA_NUM_PARALLEL, vLLM's --max-num-seqs): recorded and shown in the "
        "report as declared",
    )
    parser.add_argument("--study", help="study name (default: check-<UTC date and time>)")
    parser.add_argument("--cores", type=int, help="Snakemake cores (default: the profile's)")


def build_study(args: argparse.Namespace, model: str) -> dict[str, Any]:
    """The study file ``mabench check`` runs."""
    n_agents = args.agents or max(2, len(args.url))
    servers = []
    for i, url in enumerate(args.url, start=1):
        server: dict[str, Any] = {"name": f"s{i}", "url": url.rstrip("/"), "api": args.api}
        if args.api_key_env:
            server["api_key_env"] = args.api_key_env
        if args.parallel is not None:
            server["parallel"] = args.parallel
        servers.append(server)
    calls = {
        "collector": ["collector_analyse.md.j2", "collector_report.md.j2"],
        "insight": ["insight_insights.md.j2", "insight_recommendations.md.j2"],
    }
    return {
        "study": args.study or datetime.now(UTC).strftime("check-%Y%m%d-%H%M%S"),
        "description": (
            f"mabench check of {', '.join(args.url)} ({args.api} API): {n_agents} agents, "
            f"model {model}."
        ),
        "runs": args.runs,
        "model": model,
        "backend": {"kind": "external"},
        "baseline": args.baseline,
        "servers": servers,
        "workloads": {
            w: {"calls": [{"prompt": p, "num_predict": args.num_predict} for p in calls[w]]}
            for w in WORKLOADS
        },
        "agents": [
            {
                "name": f"agent{i + 1}",
                "workload": WORKLOADS[i % 2],
                "server": servers[i % len(servers)]["name"],
            }
            for i in range(n_agents)
        ],
        "scenarios": ["check"],
        "configs": [{"id": "check", "scenario": "check"}],
        "report": {"title": f"mabench check: {', '.join(args.url)}"},
    }


def _served_model(study: Study, urls: dict[str, str]) -> str:
    """The one model every server serves; else an error listing them."""
    timeouts = Timeouts(**study.timeouts)
    served: set[str] | None = None
    for server in study.servers:
        with sync_client(server, urls[server.name], timeouts) as client:
            names = {str(m.get("name") or m.get("model")) for m in inventory(client)[1]}
        served = names if served is None else served & names
    if served is None or len(served) != 1:
        have = ", ".join(sorted(served or ())) or "none in common"
        raise ConfigError(f"choose the model with --model (the servers serve: {have})")
    return served.pop()


def _checked_study(args: argparse.Namespace) -> dict[str, Any]:
    """The study, after checking that every URL answers its API (and has one model, when
    --model is not given)."""
    draft = build_study(args, args.model or "unknown")
    study = study_from_dict(draft, source="mabench check")
    with tempfile.TemporaryDirectory(prefix="mabench-check-") as tmp:
        pool = ServerPool(study, state_dir=tmp, log_dir=tmp)
        problems = pool.preflight()
        if problems:
            raise ConfigError("\n".join(problems))
        urls = pool.acquire()
    return draft if args.model else build_study(args, _served_model(study, urls))


def headline(root: Path) -> list[str]:
    """The lines printed at the end: from the study's runs and agents tables."""
    runs = pd.read_parquet(root / "tables" / "runs.parquet")
    agents = pd.read_parquet(root / "tables" / "agents.parquet")
    true, seed = runs["true_efficiency"].dropna(), runs["seed_efficiency"].dropna()
    lines = [
        f"{len(runs)} run{'s' if len(runs) != 1 else ''} of {int(runs['n_agents'].iloc[0])} "
        f"agents on {int(runs['n_servers'].iloc[0])} server(s), {runs['api'].iloc[0]} API, "
        f"model {runs['model'].iloc[0]}"
    ]
    if len(true):
        lines.append(
            f"  true efficiency  {true.mean():.1f} % (runs: {true.min():.1f} to {true.max():.1f} %;"
            " against one after another)"
        )
    else:
        lines.append(
            "  true efficiency  not known: how the servers share the machine is not (pass "
            "--baseline solo if each has the whole machine)"
        )
    interference = runs["interference_efficiency"].dropna()
    if len(interference):
        lines.append(
            f"  interference     {interference.mean():.1f} % (each agent alone on its server "
            "against all together)"
        )
    lines.append(
        f"  seed efficiency  {seed.mean():.1f} % (the reference study's formula: how evenly "
        "the agents finished)"
    )
    slowdown = agents["slowdown"].dropna()
    if len(slowdown):
        lines.append(f"  slowdown         {slowdown.mean():.2f}x per agent (together / alone)")
    solo, conc = agents["solo_ttft_ms"].dropna(), agents["concurrent_ttft_ms"].dropna()
    if len(solo) and len(conc):
        lines.append(
            f"  TTFT             {solo.mean():.0f} ms alone, {conc.mean():.0f} ms together "
            "(mean per call)"
        )
    return lines


def _snakefile() -> Path:
    for candidate in (Path.cwd() / "Snakefile", PROJECT / "Snakefile"):
        if candidate.is_file():
            return candidate
    raise ConfigError(
        "mabench check runs the project's Snakemake workflow: run it in the mabench checkout "
        f"(no Snakefile in {Path.cwd()} or {PROJECT})"
    )


def main(args: argparse.Namespace) -> int:
    try:
        snakefile = _snakefile()
        study = _checked_study(args)
    except (ConfigError, MabenchError) as exc:
        print(f"mabench check: {exc}\nNothing was run.", file=sys.stderr)
        return 2
    root = StudyPaths.of(study["study"]).root
    config = root / "study.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(yaml.safe_dump(study, sort_keys=False), encoding="utf-8")
    print(f"mabench check: study {config}; running the workflow", file=sys.stderr, flush=True)
    cmd = [sys.executable, "-m", "snakemake", "-s", str(snakefile), "--configfile", str(config)]
    if args.cores:
        cmd += ["--cores", str(args.cores)]
    if subprocess.run(cmd, check=False).returncode != 0:
        print(
            f"mabench check: the workflow failed; logs in {root / 'logs'}, failure reports in "
            f"{root / 'failures'}",
            file=sys.stderr,
        )
        return 1
    print("\n".join(["", *headline(root), f"  full report: {root / 'technical_report.md'}"]))
    return 0
