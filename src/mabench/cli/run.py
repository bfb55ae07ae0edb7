"""``mabench run``: measure one config × run of a study outside Snakemake.

Starts the study's servers (embedded or ollama backends) for this one run and stops them
afterwards; with the external backend it only checks the URLs.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

from mabench.config import ConfigError, load_study
from mabench.measure.errors import MabenchError
from mabench.servers.pool import ServerPool
from mabench.steps.run_job import measure


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, type=Path, help="study config (YAML)")
    parser.add_argument("--config-id", required=True, help="which config of the study")
    parser.add_argument("--run", required=True, type=int, help="run index (from 1)")
    parser.add_argument(
        "--out", required=True, type=Path, help="where to write the run record (JSON)"
    )
    parser.add_argument(
        "--failures-dir", type=Path, help="write a failure report here if the run fails"
    )


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        study = load_study(args.config)
        study.config(args.config_id)
        if args.run < 1:
            raise ConfigError(f"--run must be 1 or more, got {args.run}")
    except ConfigError as exc:
        print(f"mabench run: {exc}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="mabench-run-") as tmp:
        pool = ServerPool(study, state_dir=tmp, log_dir=Path(tmp) / "logs")
        try:
            record = measure(
                study, args.config_id, args.run, args.out, pool=pool, failures_dir=args.failures_dir
            )
        except MabenchError as exc:
            print(f"mabench run: {exc}", file=sys.stderr)
            logs = sorted((Path(tmp) / "logs").glob("*.log"))
            for log in logs:
                print(f"--- {log.name}\n{log.read_text(errors='replace')[-2000:]}", file=sys.stderr)
            return 1
        finally:
            pool.release()
    m = record.metrics
    true = "n/a" if m.true_efficiency is None else f"{m.true_efficiency:.2f} %"
    print(
        f"{args.out}: seed efficiency {m.seed_efficiency:.2f} %, true efficiency {true}, "
        f"concurrent wall {m.concurrent_wall_s:.2f} s"
    )
    return 0
