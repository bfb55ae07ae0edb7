"""What the Snakemake rules do, as plain functions (the rule scripts only unpack ``snakemake``).

Paths of one study's outputs are defined once here (:class:`StudyPaths`) and used by the
workflow's ``common.smk``, the steps and the tests.
"""

from __future__ import annotations

import json
import logging
import socket
import sys
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import msgspec

from mabench.config import ServerSpec, Study, study_from_dict
from mabench.measure.apis import open_management_clients
from mabench.measure.cache_state import planned_policy
from mabench.measure.client import Timeouts
from mabench.measure.isolation import force_unload
from mabench.measure.protocol import check_servers, models_by_server
from mabench.measure.records import write_json_atomic
from mabench.servers.pool import ServerPool
from mabench.steps import progress
from mabench.steps.run_job import measure


@dataclass(frozen=True)
class StudyPaths:
    """Where everything of one study lives, under ``results/<study>/``."""

    root: Path

    @classmethod
    def of(cls, study: str, results: str | Path = "results") -> StudyPaths:
        return cls(Path(results) / study)

    def record(self, config_id: str, run_index: int | str) -> Path:
        return self.root / "runs" / config_id / f"run_{run_index}.json"

    def unload(self, config_id: str) -> Path:
        return self.root / "unload" / f"{config_id}.json"

    def servers_up(self, config_id: str) -> Path:
        """What ``start_servers`` found for a config (temporary: gone once its unload ran)."""
        return self.root / "servers" / f"{config_id}.json"

    @property
    def tables(self) -> Path:
        return self.root / "tables"

    @property
    def failures(self) -> Path:
        return self.root / "failures"

    @property
    def servers(self) -> Path:
        return self.root / "servers"

    @property
    def logs(self) -> Path:
        return self.root / "logs"


@contextmanager
def script_logging(
    log_path: str | Path, refusals: tuple[type[BaseException], ...] = ()
) -> Iterator[None]:
    """Send stderr and ``logging`` of a rule script to its Snakemake log file.

    ``refusals``: errors that refuse the rule's input and say in their message which file,
    why and what to do. One is logged as that message alone, the last lines of the log (which
    Snakemake shows with ``--show-failed-logs``), and the script exits with status 1: the user
    reads what to do, not a traceback.
    """
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", encoding="utf-8", buffering=1) as log:
        old = sys.stderr
        sys.stderr = log
        handler = logging.StreamHandler(log)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is noise
        try:
            yield
        except refusals as exc:
            logging.getLogger("mabench").error("%s", exc)
            raise SystemExit(1) from None
        except BaseException:
            # The interpreter would print the traceback after stderr is restored: keep it here.
            logging.getLogger("mabench").exception("the rule script failed")
            raise
        finally:
            root.removeHandler(handler)
            sys.stderr = old


def load(config: Mapping[str, Any]) -> Study:
    """The typed study of a job's ``snakemake.config``. The Snakefile built the same study from
    the same config when it parsed the workflow (``common.smk``: the one check against the
    schema, whose errors name the key), so that check is not repeated in every job; the
    defaults and the checks of the typed study are."""
    return study_from_dict(dict(config), source="config", schema_checked=True)


def pool_for(study: Study, paths: StudyPaths) -> ServerPool:
    """The study's server pool on this host (its server logs under logs/servers/<host>/)."""
    host = socket.gethostname()
    return ServerPool(study, state_dir=paths.servers, log_dir=paths.logs / "servers" / host)


def start_servers_step(job_config: Mapping[str, Any], config_id: str, out: str | Path) -> None:
    """Server start-up before a config's measurement: start the study's servers on this host,
    or reuse the ones this invocation already runs, and check that every server the config
    uses answers and has its models. ``out`` describes them: names, URLs, versions, model
    digests, threads, host, and which were started now. ``job_config``: the job's
    ``snakemake.config``."""
    study = load(job_config)
    pool = pool_for(study, StudyPaths.of(study.name))
    config = study.config(config_id)
    needs = models_by_server(config)
    checked_at = datetime.now(UTC).isoformat()
    with pool.exclusive(), ExitStack() as stack:
        urls = pool.acquire(config)
        used = {n: urls[n] for n in needs}
        specs = _specs(study)
        timeouts = Timeouts(**study.timeouts)
        clients = open_management_clients(stack, specs, used, timeouts, study.backend_kind)
        apis = {n: s.api for n, s in specs.items()}
        threads = {name: proc.threads for name, proc in pool.processes().items()}
        infos = check_servers(clients, urls, needs, study.backend_kind, apis, threads)
    servers = [
        {
            **msgspec.to_builtins(info),
            "models": sorted(needs[info.name]),
            "started": info.name in pool.started,
        }
        for info in infos
    ]
    write_json_atomic(
        out,
        {
            "kind": "mabench.servers",
            "study": study.name,
            "config_id": config_id,
            "host": pool.host,
            "backend": study.backend_kind,
            "checked_at": checked_at,
            "servers": servers,
        },
    )
    for s in servers:
        logging.getLogger(__name__).info(
            "%s server %s at %s (%s, %s threads) has %s",
            "started" if s["started"] else "reused",
            s["name"],
            s["url"],
            s["version"],
            s["threads"] if s["threads"] is not None else "server's default",
            ", ".join(s["models"]),
        )


def unload_step(
    job_config: Mapping[str, Any], config_id: str, out: str | Path, servers_up: str | Path
) -> None:
    """The forced unload before a config's runs: every model on every server, verified
    (servers whose API has no unload are listed as ``unavailable``).

    The record keeps what server start-up found (``servers_up``, a temporary file).
    ``job_config``: the job's ``snakemake.config``."""
    study = load(job_config)
    pool = pool_for(study, StudyPaths.of(study.name))
    timeouts = Timeouts(**study.timeouts)
    started_at = datetime.now(UTC).isoformat()
    with pool.exclusive(), ExitStack() as stack:
        urls = pool.acquire(study.config(config_id))
        specs = _specs(study)
        clients = open_management_clients(stack, specs, urls, timeouts, study.backend_kind)
        isolation = force_unload(clients)
    if not isolation.verified:
        raise RuntimeError(f"models still loaded after the forced unload: {isolation.loaded_after}")
    up = json.loads(Path(servers_up).read_text(encoding="utf-8"))
    write_json_atomic(
        out,
        {
            "study": study.name,
            "config_id": config_id,
            "servers": urls,
            "server_start": {k: up[k] for k in ("host", "checked_at", "servers")},
            "loaded_before": isolation.loaded_before,
            "loaded_after": isolation.loaded_after,
            "verified": isolation.verified,
            "unavailable": isolation.unavailable,
            "started_at": started_at,
            "finished_at": datetime.now(UTC).isoformat(),
        },
    )
    log = logging.getLogger(__name__)
    log.info("unloaded %s before %s", isolation.loaded_before, config_id)
    if isolation.unavailable:
        log.info(
            "no forced unload on %s: the OpenAI API has no unload and no list of loaded models",
            ", ".join(isolation.unavailable),
        )


def _specs(study: Study) -> dict[str, ServerSpec]:
    return {s.name: s for s in study.servers}


def run_step(
    job_config: Mapping[str, Any], config_id: str, run_index: int, out: str | Path, attempt: int
) -> None:
    """Measure one run into its record; then one progress line with the time left.
    ``job_config``: the job's ``snakemake.config``; ``attempt``: Snakemake's, from 1."""
    study = load(job_config)
    paths = StudyPaths.of(study.name)
    record = measure(
        study,
        config_id,
        run_index,
        out,
        pool=pool_for(study, paths),
        attempt=attempt,
        failures_dir=paths.failures,
    )
    progress.report_run(study, record, paths.root)


def _baseline_methodology(study: Study) -> str:
    """What the headline speedup is measured against, in words (per config: the report's
    baseline column and each run record's protocol.baseline)."""
    what = (
        "one after another, each agent with the whole machine: where a config's servers "
        "have fewer threads than the CPUs the harness may use, a sequential phase runs each "
        "agent alone on its server reloaded with every CPU (its own load and warm-up); where "
        "every server has the whole machine, the solo phase is that baseline"
    )
    return {
        "auto": f"{what} (baseline: auto; external servers have none unless declared)",
        "sequential": f"{what}; the study asks for a sequential phase in every config",
        "solo": "the solo phase: the study declares that every server has the whole machine",
        "none": "none (baseline: none): only the interference numbers are reported",
    }[study.baseline]


def report_settings(study: Study) -> dict[str, Any]:
    """What statistics and report need from a study: its report block, thresholds, and a
    methodology summary. Plain data (a rule parameter): changing any of it re-renders the
    analysis, never the measurements."""
    settings: dict[str, Any] = {
        "study": study.name,
        "description": study.description,
        "contention": dict(study.contention),
        **study.report,
    }
    if study.imported:
        # the reanalysis reads the folder the tables were imported from (None: bundled copy)
        settings["tr110_dir"] = study.import_.get("path") if study.import_ else None
        return settings
    phases = {
        "balanced": "(sequential,) solo, concurrent in odd runs and the reverse in even runs "
        "for every other config, the other way round for the others (as many runs of each "
        "order over the study)",
        "alternate": "(sequential,) solo, concurrent in odd runs, the reverse in even runs",
        "solo_first": "(sequential,) solo, concurrent in every run",
        "concurrent_first": "concurrent, solo(, sequential) in every run",
    }[study.phase_order]
    workloads = "; ".join(
        f"{w.name}: " + ", ".join(f"{c.prompt.name} (num_predict {c.num_predict})" for c in w.calls)
        for w in study.workloads.values()
    )
    settings["methodology"] = {
        "Protocol": (
            "per run: every server answers and has the model; forced unload of every model on "
            "every server, verified by /api/ps; each agent's model loaded with its options, "
            "then one unmeasured warm-up call per agent, as long as its first measured one "
            "(salted, one generated token); solo phase (each agent "
            f"alone, one after another) and concurrent phase (all agents at once); {phases}; "
            "then the checks: the same work in both phases (on a mismatch: "
            f"{study.work_mismatch_policy}), and every server holding only what the agents "
            "loaded"
        ),
        "Baseline": _baseline_methodology(study),
        "Runs per config": str(study.runs),
        "Backend": f"{study.backend_kind} ({len(study.servers)} servers)",
        **_api_methodology(study),
        "Prompt cache": _cache_methodology(study),
        "Sampling seed": f"{study.seed} (unless an agent's options set one)",
        "Workloads": workloads,
        "Corpus": f"{study.corpus['files']} result files of "
        + ("the bundled TR110 dataset" if study.corpus.get("path") is None else "a user folder"),
        "Client timeouts": ", ".join(f"{k} {v:g}" for k, v in study.timeouts.items()),
    }
    return settings


def _cache_methodology(study: Study) -> str:
    """The methodology line on the prompt caches: each server's policy before every phase."""
    servers_by_policy: dict[str, list[str]] = {}
    for s in study.servers:
        servers_by_policy.setdefault(planned_policy(s, study.backend_kind), []).append(s.name)
    policies = "; ".join(f"{', '.join(n)}: {p}" for p, n in servers_by_policy.items())
    return (
        "before each measured phase every server's prompt cache is brought to the same state, "
        f"so no phase reuses another's prompts ({policies}; the policy used is recorded per "
        "server in every run); a run whose phases found different cache hits (cache_differ), "
        "or whose servers said nothing and were not reset (cache_unknown), is flagged and "
        "left out of the headline"
    )


def _api_methodology(study: Study) -> dict[str, str]:
    """The methodology line on the APIs, for a study with servers measured through OpenAI's."""
    openai = [s.name for s in study.servers if s.api == "openai"]
    if not openai:
        return {}
    text = (
        f"servers {', '.join(openai)}: OpenAI API (streamed /v1/chat/completions; TTFT at the "
        "first content delta; token counts from usage, else counted deltas); other servers: "
        "Ollama's API. "
    )
    if study.backend_kind == "external":
        text += (
            "The OpenAI API has no unload and no list of loaded models, so no forced unload "
            "was done on the OpenAI servers, and a one-token completion loads the model (no "
            "load time known)"
        )
    else:
        text += (
            "The started servers speak Ollama's API too: the forced unload, its check and "
            "the load went through it on every server"
        )
    return {"APIs": text}


def pull_step(study: Study, out: str | Path, paths: StudyPaths) -> None:
    """Opt-in: pull every model the study needs through one of its Ollama servers.

    The started servers share one model store (``backend.ollama_models``), so one pull serves
    them all. Uses Ollama's own ``/api/pull`` (streamed progress goes to the rule log).
    """
    if study.backend_kind != "ollama":
        raise RuntimeError(
            f"pull_models is for the ollama backend; study {study.name!r} uses {study.backend_kind!r}"
        )
    models = sorted({a.model for c in study.configs for a in c.agents})
    log = logging.getLogger(__name__)
    pool = pool_for(study, paths)
    with pool.exclusive():
        url = next(iter(pool.acquire().values()))
        for model in models:
            log.info("pulling %s through %s", model, url)
            with httpx.stream("POST", f"{url}/api/pull", json={"model": model}, timeout=None) as r:
                for line in r.iter_lines():
                    if line.strip():
                        log.info("%s", line)
                        if '"error"' in line:
                            raise RuntimeError(f"pulling {model} failed: {line}")
                if r.status_code != 200:
                    raise RuntimeError(f"pulling {model} failed: HTTP {r.status_code}")
    write_json_atomic(out, {"study": study.name, "models": models, "server": url})


def release_servers(study: Study, paths: StudyPaths) -> int:
    """Stop the study's servers if this invocation owns them (Snakefile onsuccess/onerror)."""
    return pool_for(study, paths).release()
