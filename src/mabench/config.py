"""Study configuration: load, validate (JSON schema, then cross-references), fill defaults.

Every mistake in a study file is found here, before any server starts or any job runs, and
reported as a :class:`ConfigError` naming the key (``configs[3].options.insight.num_ctx``).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import socket
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from mabench.api.ollama import KeepAlive, Options, OptionsError, RequestError
from mabench.api.openai import OPTION_FIELDS, unsupported_options

BUNDLED_PROMPTS = "measure/prompts"


class ConfigError(ValueError):
    """A study configuration that cannot be run; the message names the key and the fix."""


@cache
def config_schema() -> dict[str, Any]:
    text = resources.files("mabench").joinpath("schemas/config.schema.yaml").read_text()
    # libyaml's loader when PyYAML has it: ~5 ms instead of ~35 ms in every job
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def schema_path() -> Path:
    """Filesystem path of the config schema (Snakemake's ``validate`` wants a path)."""
    return Path(str(resources.files("mabench").joinpath("schemas/config.schema.yaml")))


# ---------------------------------------------------------------------------------------------
# Typed study
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CallSpec:
    prompt: Path
    num_predict: int


@dataclass(frozen=True)
class Workload:
    name: str
    calls: tuple[CallSpec, ...]
    system: str | None = None


@dataclass(frozen=True)
class ServerSpec:
    name: str
    port: int | None = None  # None: pick a free port (embedded / ollama)
    url: str | None = None  # external servers only
    api: str = "ollama"  # the API the agents are measured through: ollama or openai
    api_key_env: str | None = None  # the environment variable holding the API key
    #: external servers only: their concurrency settings as the config declares them
    settings: dict[str, str] = field(default_factory=dict)
    #: how the server's prompt cache is brought to the same state before each measured phase:
    #: auto, none, reload, endpoint or salt (mabench.measure.cache_state)
    cache_reset: str = "auto"
    #: requests served at once (slots); None: the backend's default (see ``parallel_of``)
    parallel: int | None = None

    def api_key(self) -> str | None:
        """The API key from the environment (None when the server takes none).

        The key is read when a client is made and never stored anywhere else.
        """
        if self.api_key_env is None:
            return None
        key = os.environ.get(self.api_key_env, "")
        if not key:
            raise ConfigError(
                f"server {self.name!r}: its API key variable {self.api_key_env} "
                "(servers[].api_key_env) is not set; export it and try again"
            )
        return key

    def fingerprint(self) -> dict[str, Any]:
        """What of the server a measurement depends on (the API only when not the default, the
        declared settings only when there are some, so studies measured before either existed
        keep their config hashes)."""
        out: dict[str, Any] = {"name": self.name, "port": self.port, "url": self.url}
        if self.api != "ollama":
            out["api"] = self.api
        if self.api_key_env is not None:
            out["api_key_env"] = self.api_key_env
        if self.settings:
            out["settings"] = self.settings
        if self.cache_reset != "auto":
            out["cache_reset"] = self.cache_reset
        if self.parallel is not None:
            out["parallel"] = self.parallel
        return out


@dataclass(frozen=True)
class AgentSpec:
    name: str
    workload: str
    server: str
    model: str


@dataclass(frozen=True)
class ConfigSpec:
    id: str
    scenario: str
    coordinator: str
    agents: tuple[AgentSpec, ...]
    options: dict[str, Options]
    description: str = ""

    def agent_options(self, agent: str) -> Options:
        return self.options.get(agent, Options())


@dataclass(frozen=True)
class Study:
    name: str
    description: str
    runs: int
    model: str
    endpoint: str
    phase_order: str
    seed: int
    backend: dict[str, Any]
    servers: tuple[ServerSpec, ...]
    timeouts: dict[str, float]
    retries: int
    workloads: dict[str, Workload]
    corpus: dict[str, Any]
    contention: dict[str, float]
    report: dict[str, Any]
    configs: tuple[ConfigSpec, ...]
    raw: dict[str, Any] = field(repr=False)
    base_dir: Path = field(repr=False, default=Path("."))
    import_: dict[str, Any] | None = None
    on_work_mismatch: str = "auto"
    baseline: str = "auto"

    @property
    def imported(self) -> bool:
        """True for a study that imports a legacy dataset instead of measuring."""
        return self.import_ is not None

    @property
    def backend_kind(self) -> str:
        return self.backend["kind"]

    @property
    def used_models(self) -> list[str]:
        """Every model some config's agents use, sorted."""
        return sorted({a.model for c in self.configs for a in c.agents})

    @property
    def config_ids(self) -> list[str]:
        return [c.id for c in self.configs]

    def config(self, config_id: str) -> ConfigSpec:
        for c in self.configs:
            if c.id == config_id:
                return c
        known = ", ".join(self.config_ids)
        raise ConfigError(f"study {self.name!r} has no config {config_id!r} (known: {known})")

    def server(self, name: str) -> ServerSpec:
        for s in self.servers:
            if s.name == name:
                return s
        raise ConfigError(f"study {self.name!r} has no server {name!r}")

    def server_settings(self, name: str) -> dict[str, str]:
        """Server ``name``'s concurrency settings: for ``ollama``, the environment the pool
        starts it with (OLLAMA_NUM_PARALLEL, OLLAMA_MAX_LOADED_MODELS, OLLAMA_KEEP_ALIVE); for
        ``llama_server``, its slots and context per slot; for ``external``, what the config
        declares (``servers[].settings``, and ``parallel`` if given); none for ``embedded``
        (one request per model at a time, by construction)."""
        spec = self.server(name)
        if self.backend_kind == "external":
            declared = {} if spec.parallel is None else {"parallel": str(spec.parallel)}
            return {**spec.settings, **declared}
        if self.backend_kind == "llama_server":
            return {
                "parallel": str(self.parallel_of(name)),
                "ctx_size": str(self.backend.get("ctx_size", LLAMA_SERVER_CTX_SIZE)),
            }
        if self.backend_kind != "ollama":
            return {}
        most = max((len(_models_per_server(c).get(name, ())) for c in self.configs), default=1)
        return {
            "OLLAMA_NUM_PARALLEL": str(self.parallel_of(name)),
            "OLLAMA_MAX_LOADED_MODELS": str(self.backend.get("max_loaded_models", max(1, most))),
            "OLLAMA_KEEP_ALIVE": str(self.backend.get("keep_alive", -1)),
        }

    def served_model(self, name: str) -> str:
        """The model server ``name`` serves its agents (a llama-server serves exactly one,
        checked when the study is read): the one some config's agents ask it for, else the
        study's model."""
        for config in self.configs:
            for agent in config.agents:
                if agent.server == name:
                    return agent.model
        return self.model

    def parallel_of(self, name: str) -> int:
        """Requests server ``name`` serves at once: ``servers[].parallel``, else (ollama)
        ``backend.num_parallel``, else 1 (for an external server that declares none: unknown,
        counted as 1)."""
        declared = self.server(name).parallel
        if declared is not None:
            return declared
        return int(self.backend.get("num_parallel", 1)) if self.backend_kind == "ollama" else 1

    @property
    def server_settings_source(self) -> str | None:
        """``set`` (the pool set them), ``declared`` (the config says so; nothing observed
        them) or None (no settings)."""
        return {"ollama": "set", "llama_server": "set", "external": "declared"}.get(
            self.backend_kind
        )

    def phase_order_for(
        self, run_index: int, config_id: str, sequential: bool = False
    ) -> list[str]:
        """The measured phases of one run of ``config_id``, in order: solo first, then
        concurrent, with a sequential phase before them when ``sequential``; reversed for
        ``concurrent_first``, every other run for ``alternate``, and every other run starting
        with the reversed one in every other config for ``balanced``."""
        forward = (["sequential"] if sequential else []) + ["solo", "concurrent"]
        flips = {
            "solo_first": 0,
            "concurrent_first": 1,
            "alternate": run_index + 1,
            "balanced": run_index + 1 + self.config_ids.index(config_id),
        }[self.phase_order]
        return forward if flips % 2 == 0 else forward[::-1]

    @property
    def same_text(self) -> bool:
        """Whether the same work includes the same answer texts: not on llama.cpp's server,
        whose numbers depend on what it computes together (the slots batched, the prefix a
        slot reuses), so the same seed gives another text when batched; there the same work
        is the same token counts and stop reasons, as under a salt."""
        return self.backend_kind != "llama_server"

    @property
    def work_mismatch_policy(self) -> str:
        """``flag`` or ``fail`` (``auto``: flag on the embedded server, fail elsewhere)."""
        if self.on_work_mismatch != "auto":
            return self.on_work_mismatch
        return "flag" if self.backend_kind == "embedded" else "fail"

    def measurement_fingerprint(self, config_id: str) -> dict[str, Any]:
        """Everything that changes what a run of ``config_id`` measures, and nothing else.

        Report settings, retries and the like are left out, so changing them never re-runs a
        measurement; prompt *contents* are included, so editing a prompt does.
        """
        cfg = self.config(config_id)
        workloads = {a.workload for a in cfg.agents}
        return {
            "config": {
                "id": cfg.id,
                "scenario": cfg.scenario,
                "coordinator": cfg.coordinator,
                "agents": [vars(a) for a in cfg.agents],
                "options": {k: v.to_dict() for k, v in sorted(cfg.options.items())},
            },
            "model": self.model,
            "endpoint": self.endpoint,
            "seed": self.seed,
            "baseline": self.baseline,
            "backend": {k: v for k, v in self.backend.items() if k != "startup_timeout_s"},
            "servers": [
                s.fingerprint() for s in self.servers if s.name in {a.server for a in cfg.agents}
            ],
            "workloads": {
                name: {
                    "system": self.workloads[name].system,
                    "calls": [
                        {
                            "prompt": c.prompt.read_text(encoding="utf-8"),
                            "num_predict": c.num_predict,
                        }
                        for c in self.workloads[name].calls
                    ],
                }
                for name in sorted(workloads)
            },
            "corpus": self.corpus,
            "contention": self.contention,
            "timeouts": self.timeouts,
        }

    def config_hash(self, config_id: str) -> str:
        blob = json.dumps(self.measurement_fingerprint(config_id), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def load_study(path: str | Path) -> Study:
    """Read, validate and type a study file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"study config {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    return study_from_dict(data, base_dir=path.parent, source=str(path))


def study_from_dict(
    data: Any, base_dir: Path = Path("."), source: str = "config", *, schema_checked: bool = False
) -> Study:
    """Validate a config mapping (as Snakemake's ``config``) and build the typed study.

    ``schema_checked``: ``data`` is a config this process's workflow already checked against
    the schema (a job's ``snakemake.config``, checked when the Snakefile was parsed): the
    schema check is not repeated; defaults and every check of the typed study still are."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a study config must be a mapping, got {type(data).__name__}")
    data = copy.deepcopy(data)
    schema = config_schema()
    if not schema_checked:
        _check_schema(data, schema, source)
    apply_defaults(data, schema)
    try:
        return _build_study(data, Path(base_dir))
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def absolutize(config: dict[str, Any], base_dir: str | Path) -> dict[str, Any]:
    """Make the file paths of a config mapping absolute (relative to ``base_dir``).

    The workflow passes the config to every job; with absolute paths a job reads the same
    files whatever its working directory, and no job parameter depends on where the
    checkout lives.
    """
    base = Path(base_dir).resolve()
    out = copy.deepcopy(config)

    def fix(value: Any, must_exist: bool = False) -> Any:
        if not isinstance(value, str):
            return value
        candidate = base / value
        return str(candidate) if (candidate.exists() or not must_exist) else value

    for workload in (out.get("workloads") or {}).values():
        for call in (workload or {}).get("calls") or []:
            if isinstance(call, dict) and "prompt" in call:
                call["prompt"] = fix(call["prompt"], must_exist=True)  # else: a bundled prompt
    backend = out.get("backend") or {}
    for name, path in (backend.get("models") or {}).items():
        backend["models"][name] = fix(path)
    if backend.get("ollama_models"):
        backend["ollama_models"] = fix(backend["ollama_models"])
    for section in ("corpus", "import"):
        if isinstance(out.get(section), dict) and out[section].get("path"):
            out[section]["path"] = fix(out[section]["path"])
    return out


def _key_path(parts: Any) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def _check_schema(data: dict[str, Any], schema: dict[str, Any], source: str) -> None:
    # Lazy: jobs build their study from a config the Snakefile checked (schema_checked) and
    # should not pay ~55 ms to import jsonschema
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema)
    errors = list(validator.iter_errors(data))
    if not errors:
        return
    # Report the most specific error first; list a few more so one run fixes several typos.
    errors.sort(key=lambda e: (-len(e.absolute_path), _key_path(e.absolute_path)))
    lines = []
    for err in errors[:5]:
        best = jsonschema.exceptions.best_match([err])
        where = _key_path(best.absolute_path)
        lines.append(f"{where}: {_explain(best)}")
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    raise ConfigError(f"{source}: invalid study config{more}:\n  " + "\n  ".join(lines))


def _explain(err: Any) -> str:
    if err.validator == "additionalProperties":
        return err.message.replace("Additional properties are not allowed", "unknown key(s)")
    if err.validator == "oneOf":
        return f"{err.instance!r} is not valid here ({err.schema.get('description', 'see schema')})"
    return err.message


def apply_defaults(data: Any, schema: dict[str, Any], root: dict[str, Any] | None = None) -> None:
    """Fill ``default`` values from the schema, recursively (objects, array items, maps)."""
    root = root or schema
    if "$ref" in schema:
        ref = schema["$ref"].split("/")[-1]
        schema = root["$defs"][ref]
    if isinstance(data, dict):
        for key, sub in schema.get("properties", {}).items():
            if key not in data and "default" in sub:
                data[key] = copy.deepcopy(sub["default"])
            if key in data:
                apply_defaults(data[key], sub, root)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key, value in data.items():
                if key not in schema.get("properties", {}):
                    apply_defaults(value, extra, root)
    elif isinstance(data, list) and isinstance(schema.get("items"), dict):
        for item in data:
            apply_defaults(item, schema["items"], root)


def _resolve_prompt(name: str, base_dir: Path, where: str) -> Path:
    candidate = (base_dir / name).resolve()
    if candidate.is_file():
        return candidate
    bundled = Path(str(resources.files("mabench").joinpath(BUNDLED_PROMPTS, name)))
    if bundled.is_file():
        return bundled
    raise ConfigError(
        f"{where}: prompt template {name!r} not found (looked in {base_dir} and in the bundled "
        f"prompts {bundled.parent})"
    )


def _build_study(data: dict[str, Any], base_dir: Path) -> Study:
    """The typed study of a schema-valid, defaults-filled config: cross-references checked."""
    backend = data["backend"]
    servers = _build_servers(data["servers"], backend["kind"])
    workloads = _build_workloads(data["workloads"], base_dir)
    names = _Names(workloads=set(workloads), servers={s.name for s in servers})
    default_roster = _build_roster(data["agents"], "agents", names, data["model"])
    configs: list[ConfigSpec] = []
    for i, c in enumerate(data.get("configs", [])):
        where = f"configs[{i}]"
        if any(x.id == c["id"] for x in configs):
            raise ConfigError(f"{where}.id: duplicate config id {c['id']!r}")
        roster = (
            _build_roster(c["agents"], f"{where}.agents", names, data["model"])
            if "agents" in c
            else default_roster
        )
        configs.append(_build_config(c, where, data, roster))
    for i, config in enumerate(configs):
        _check_openai_agents(config, f"configs[{i}]", servers, data["endpoint"])
        if backend["kind"] != "llama_server":  # its servers are restarted with every CPU
            _check_sequential_baseline(config, f"configs[{i}]", servers, data["baseline"])
    _check_extra_models(backend, base_dir)
    _check_ollama_settings(backend)
    _check_llama_server(backend, configs)
    return Study(
        name=data["study"],
        description=data["description"],
        runs=int(data["runs"]),
        model=data["model"],
        endpoint=data["endpoint"],
        phase_order=data["phase_order"],
        seed=int(data["seed"]),
        backend=backend,
        servers=servers,
        timeouts={k: float(v) for k, v in data["timeouts"].items()},
        retries=int(data["retries"]),
        workloads=workloads,
        corpus=_corpus_settings(data["corpus"], base_dir),
        contention={k: float(v) for k, v in data["contention"].items()},
        report=data["report"],
        configs=tuple(configs),
        raw=data,
        base_dir=base_dir,
        import_=_import_settings(data, base_dir),
        on_work_mismatch=data["on_work_mismatch"],
        baseline=data["baseline"],
    )


@dataclass(frozen=True)
class _Names:
    """What a roster may refer to: the declared workloads and servers."""

    workloads: set[str]
    servers: set[str]


def _build_servers(items: list[dict[str, Any]], kind: str) -> tuple[ServerSpec, ...]:
    servers: list[ServerSpec] = []
    seen_ports: dict[int, str] = {}
    for i, s in enumerate(items):
        where = f"servers[{i}]"
        if any(x.name == s["name"] for x in servers):
            raise ConfigError(f"{where}.name: duplicate server name {s['name']!r}")
        spec = _server_spec(s, where, kind)
        if spec.port is not None:
            if spec.port in seen_ports:
                raise ConfigError(
                    f"{where}.port: port {spec.port} is also used by server {seen_ports[spec.port]!r}"
                )
            seen_ports[spec.port] = spec.name
        servers.append(spec)
    if kind == "external":
        _check_distinct_endpoints(servers)
    return tuple(servers)


def endpoints(url: str) -> set[tuple[str, int]]:
    """The (address, port) pairs ``url`` reaches: its host resolved (``localhost`` is
    127.0.0.1 and ::1), or the host name itself where it does not resolve here."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return {(host, port)}
    return {(str(info[4][0]), port) for info in infos} or {(host, port)}


def _check_distinct_endpoints(servers: list[ServerSpec]) -> None:
    """Two names for one server would make a 'dedicated' topology really shared."""
    seen: list[tuple[ServerSpec, set[tuple[str, int]]]] = []
    for i, spec in enumerate(servers):
        mine = endpoints(spec.url or "")
        for other, theirs in seen:
            common = sorted(mine & theirs)
            if common:
                address, port = common[0]
                raise ConfigError(
                    f"servers[{i}].url: {spec.url} is the same server as {other.name!r} "
                    f"({other.url}): both reach {address} port {port}, so agents on the two "
                    "would share one server; give each server its own address or port"
                )
        seen.append((spec, mine))


def _models_per_server(config: ConfigSpec) -> dict[str, set[str]]:
    models: dict[str, set[str]] = {}
    for agent in config.agents:
        models.setdefault(agent.server, set()).add(agent.model)
    return models


def _server_spec(s: dict[str, Any], where: str, kind: str) -> ServerSpec:
    """One server entry: external servers are given by url, started ones by port."""
    if s.get("settings") and kind != "external":
        raise ConfigError(
            f"{where}.settings: only external servers declare settings (backend.kind is "
            f"{kind}); mabench sets and records those of the servers it starts"
        )
    if kind == "external":
        if not s.get("url"):
            raise ConfigError(f"{where}.url: backend.kind is external, so every server needs a url")
        if "port" in s and s["port"] != "auto":
            raise ConfigError(f"{where}.port: external servers are given by url, not port")
    elif s.get("url"):
        raise ConfigError(
            f"{where}.url: only external servers take a url (backend.kind is {kind}); "
            "give a port, or set backend.kind: external"
        )
    api = s.get("api") or ("openai" if kind == "llama_server" else "ollama")
    if kind == "llama_server" and api != "openai":
        raise ConfigError(
            f"{where}.api: llama.cpp's server speaks only the OpenAI API; remove api (or set "
            "api: openai), or use backend.kind: embedded for Ollama's API"
        )
    if s.get("api_key_env") and api != "openai":
        raise ConfigError(
            f"{where}.api_key_env: only servers that speak the OpenAI API take an API key "
            "(set api: openai, or remove api_key_env)"
        )
    if s.get("parallel", 1) != 1 and kind == "embedded":
        raise ConfigError(
            f"{where}.parallel: the embedded server serves one request per model at a time; "
            "remove parallel, or use backend.kind: llama_server for a server with slots"
        )
    port = None if s.get("port", "auto") == "auto" else int(s["port"])
    return ServerSpec(
        name=s["name"],
        port=port,
        url=(s.get("url") or None),
        api=api,
        parallel=s.get("parallel"),
        api_key_env=s.get("api_key_env"),
        settings={str(k): _setting_text(v) for k, v in (s.get("settings") or {}).items()},
        cache_reset=s.get("cache_reset", "auto"),
    )


def _setting_text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _build_workloads(items: dict[str, Any], base_dir: Path) -> dict[str, Workload]:
    workloads: dict[str, Workload] = {}
    for name, w in items.items():
        calls = tuple(
            CallSpec(
                prompt=_resolve_prompt(
                    c["prompt"], base_dir, f"workloads.{name}.calls[{j}].prompt"
                ),
                num_predict=int(c["num_predict"]),
            )
            for j, c in enumerate(w["calls"])
        )
        workloads[name] = Workload(name=name, calls=calls, system=w.get("system"))
    return workloads


def _build_roster(
    items: list[dict[str, Any]], where: str, names: _Names, default_model: str
) -> tuple[AgentSpec, ...]:
    agents: list[AgentSpec] = []
    for j, a in enumerate(items):
        here = f"{where}[{j}]"
        if any(x.name == a["name"] for x in agents):
            raise ConfigError(f"{here}.name: duplicate agent name {a['name']!r}")
        if a["workload"] not in names.workloads:
            known = ", ".join(sorted(names.workloads))
            raise ConfigError(
                f"{here}.workload: unknown workload {a['workload']!r} (known: {known})"
            )
        if a["server"] not in names.servers:
            known = ", ".join(sorted(names.servers))
            raise ConfigError(f"{here}.server: unknown server {a['server']!r} (servers: {known})")
        agents.append(
            AgentSpec(
                name=a["name"],
                workload=a["workload"],
                server=a["server"],
                model=a.get("model", default_model),
            )
        )
    return tuple(agents)


def _build_config(
    c: dict[str, Any], where: str, data: dict[str, Any], agents: tuple[AgentSpec, ...]
) -> ConfigSpec:
    scenarios = data["scenarios"]
    if c["scenario"] not in scenarios:
        raise ConfigError(
            f"{where}.scenario: unknown scenario {c['scenario']!r} (declared scenarios: "
            f"{', '.join(scenarios)}; add it to `scenarios` if it is new)"
        )
    return ConfigSpec(
        id=c["id"],
        scenario=c["scenario"],
        coordinator=c.get("coordinator", data["coordinator"]),
        agents=agents,
        options=_config_options(c.get("options", {}), where, {a.name for a in agents}),
        description=c.get("description", ""),
    )


def _config_options(items: dict[str, Any], where: str, agent_names: set[str]) -> dict[str, Options]:
    """A config's options per agent: known keys, right types, num_predict left to workloads."""
    options: dict[str, Options] = {}
    for agent, opts in items.items():
        if agent not in agent_names:
            raise ConfigError(
                f"{where}.options.{agent}: no agent {agent!r} in this config "
                f"(agents: {', '.join(sorted(agent_names))})"
            )
        try:
            options[agent] = Options.from_mapping(opts, unknown="error")
        except OptionsError as exc:
            raise ConfigError(f"{where}.options.{agent}: {exc.message}") from None
        if options[agent].num_predict is not None:
            raise ConfigError(
                f"{where}.options.{agent}.num_predict: set num_predict per call in `workloads`, "
                "not per agent"
            )
    return options


def _check_openai_agents(
    config: ConfigSpec, where: str, servers: tuple[ServerSpec, ...], endpoint: str
) -> None:
    """Agents on OpenAI-API servers: measured through /v1/chat/completions, and only with
    options that API has a field for (runner options such as num_ctx have none)."""
    index = {s.name: i for i, s in enumerate(servers)}
    for agent in config.agents:
        server = servers[index[agent.server]]
        if server.api != "openai":
            continue
        if endpoint != "chat":
            raise ConfigError(
                f"endpoint: {endpoint!r} is Ollama's /api/{endpoint}, but agent {agent.name!r} "
                f"of {config.id} uses server {server.name!r}, which speaks the OpenAI API "
                f"(servers[{index[server.name]}].api); it is measured through "
                "/v1/chat/completions: set endpoint: chat"
            )
        unsupported = unsupported_options(config.agent_options(agent.name))
        if unsupported:
            raise ConfigError(
                f"{where}.options.{agent.name}.{unsupported[0]}: the OpenAI API has no "
                f"equivalent, and agent {agent.name!r} uses server {server.name!r} "
                f"(servers[{index[server.name]}].api: openai); the API takes "
                f"{', '.join(sorted(OPTION_FIELDS))}"
            )


def _check_extra_models(backend: dict[str, Any], base_dir: Path) -> None:
    for name, path in backend.get("models", {}).items():
        if backend["kind"] not in ("embedded", "llama_server"):
            raise ConfigError(
                f"backend.models.{name}: extra GGUF files are for the servers mabench starts "
                "on llama.cpp (backend.kind embedded or llama_server)"
            )
        if not (base_dir / path).is_file():
            raise ConfigError(f"backend.models.{name}: GGUF file {base_dir / path} does not exist")


OLLAMA_SETTINGS = ("num_parallel", "max_loaded_models", "keep_alive")
LLAMA_SERVER_SETTINGS = ("llama_server_binary", "ctx_size")
#: context tokens of each llama-server slot unless ``backend.ctx_size`` says otherwise
LLAMA_SERVER_CTX_SIZE = 2048


def _check_llama_server(backend: dict[str, Any], configs: list[ConfigSpec]) -> None:
    """Settings of the llama_server backend only there; one model per llama-server (it serves
    the one GGUF it was started with)."""
    for key in LLAMA_SERVER_SETTINGS:
        if key in backend and backend["kind"] != "llama_server":
            raise ConfigError(
                f"backend.{key}: a setting of the llama_server backend (backend.kind is "
                f"{backend['kind']}); remove it"
            )
    if backend["kind"] != "llama_server":
        return
    models: dict[str, set[str]] = {}
    for config in configs:
        for server, names in _models_per_server(config).items():
            models.setdefault(server, set()).update(names)
    for server, names in sorted(models.items()):
        if len(names) > 1:
            raise ConfigError(
                f"servers: llama-server {server!r} serves one model, but agents ask it for "
                f"{', '.join(sorted(names))}; give each model its own server"
            )


def _check_sequential_baseline(
    config: ConfigSpec, where: str, servers: tuple[ServerSpec, ...], baseline: str
) -> None:
    """``baseline: sequential`` reloads each agent's server with every CPU (``num_thread``, a
    runner option of Ollama's API), which a server on the OpenAI API cannot be asked for."""
    if baseline != "sequential":
        return
    apis = {s.name: s.api for s in servers}
    for agent in config.agents:
        if apis[agent.server] == "openai":
            raise ConfigError(
                f"baseline: sequential reloads each agent's server with every CPU (num_thread, "
                f"an option of Ollama's API), but agent {agent.name!r} of {where} ({config.id}) "
                f"uses server {agent.server!r}, which speaks the OpenAI API: use baseline: solo "
                "if each server has the whole machine, or none"
            )


def _check_ollama_settings(backend: dict[str, Any]) -> None:
    for key in OLLAMA_SETTINGS:
        if key in backend and backend["kind"] != "ollama":
            raise ConfigError(
                f"backend.{key}: a setting of the ollama backend (backend.kind is "
                f"{backend['kind']}); remove it, or declare an external server's settings "
                "in servers[].settings"
            )
    if "keep_alive" in backend:
        try:
            KeepAlive.parse(backend["keep_alive"])
        except RequestError as exc:
            raise ConfigError(f"backend.keep_alive: {exc.message}") from None


def _corpus_settings(corpus: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    corpus = dict(corpus)
    if corpus.get("path") is not None:
        cpath = (base_dir / corpus["path"]).resolve()
        if not cpath.is_dir():
            raise ConfigError(f"corpus.path: {cpath} is not a folder")
        corpus["path"] = str(cpath)
    return corpus


def _import_settings(data: dict[str, Any], base_dir: Path) -> dict[str, Any] | None:
    settings = data.get("import")
    if settings is None:
        return None
    settings = dict(settings)
    if settings.get("path") is not None:
        path = (base_dir / settings["path"]).resolve()
        if not path.is_dir():
            raise ConfigError(f"import.path: {path} is not a folder")
        settings["path"] = str(path)
    return settings
