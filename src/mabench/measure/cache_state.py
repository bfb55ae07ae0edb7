"""The same prompt-cache state before every measured phase.

Every measured phase sends the same prompts, so a server that caches prompts (Ollama's
per-slot cache, llama.cpp server's ``cache_prompt``, llama-cpp-python's server, vLLM's
automatic prefix caching, SGLang's radix cache) would let whichever phase comes second skip
its prefill. Each server gets a cache policy (``servers[].cache_reset``), and
:func:`bring_to_same_cache_state` applies it before each measured phase, whatever the phases
are:

- ``none``: nothing. Right for the embedded server, which clears its KV cache at the start of
  every request (``auto`` picks it there); anywhere else the run's cache check says whether
  the phases saw the same cache hits, or that nobody knows.
- ``reload``: an unmeasured forced unload and load of each agent's model with its options, as
  at the start of the run (Ollama's API: an unloaded model leaves no cache).
- ``endpoint``: the server's own reset: vLLM ``POST /reset_prefix_cache``, SGLang
  ``POST /flush_cache``, llama.cpp server ``POST /slots/<id>?action=erase`` for every slot
  (``GET /slots``, which needs ``--slots``; the erase needs ``--slot-save-path``, without
  which it answers 501). ``auto`` uses the first one the server answers.
- ``salt``: a nonce of the same length, new for every phase and agent, at the very start of
  what the model reads (the system prompt if there is one, else every prompt), so no phase
  can reuse another's prefix; the same-work check then compares token counts and stop
  reasons, not texts (:func:`mabench.measure.validity.compare_work`).

The server of an agent measured alone (solo and sequential phases) is reset through its
endpoint before each agent where it serves more than one (:func:`resets_between_agents`):
alone, an agent must not find the previous agent's prompts in a shared server's cache when the
agents started together do not.

The warm-up (:func:`warmup_plans`) sends each agent's first prompt with a salt of its own, so
it pays what a first long request pays without leaving anything a phase could reuse. What each
server's policy was is recorded per server (:func:`with_cache_policy`), each call's salt in its
call record (``prompt_salt``).
"""

from __future__ import annotations

import logging
import secrets
from collections import Counter
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, replace

import msgspec

from mabench.config import ServerSpec
from mabench.measure.agents import AgentPlan, first_call_warmup
from mabench.measure.apis import SyncClient, can_unload, open_management_clients
from mabench.measure.client import Timeouts
from mabench.measure.errors import IsolationError, RunFailed, ServerCallError, ServerSetupError
from mabench.measure.isolation import force_unload, loaded_entries
from mabench.measure.openai_client import OpenAIClient
from mabench.measure.records import PsModel, ServerInfo

__all__ = [
    "AUTO",
    "POLICIES",
    "CachePolicy",
    "CacheState",
    "bring_to_same_cache_state",
    "new_salt",
    "open_cache_state",
    "planned_policy",
    "resets_between_agents",
    "resolve_policy",
    "warmup_plans",
    "with_cache_policy",
]

log = logging.getLogger(__name__)

AUTO = "auto"
NONE, RELOAD, ENDPOINT, SALT = "none", "reload", "endpoint", "salt"
POLICIES = (NONE, RELOAD, ENDPOINT, SALT)
#: the resets that empty a whole server's prefix cache with one POST, tried in this order
WHOLE_CACHE_RESETS = (
    ("/reset_prefix_cache", "vLLM's prefix-cache reset"),
    ("/flush_cache", "SGLang's cache flush"),
)
#: hex digits of a salt's nonce: every salt has the same length
SALT_HEX_DIGITS = 8
PER_REQUEST = "the embedded server clears its KV cache at the start of every request"


@dataclass(frozen=True)
class CachePolicy:
    """How one server's cache is brought to the same state before each measured phase."""

    server: str
    kind: str  # one of POLICIES
    how: str  # in words, for the record and the report
    #: endpoint: the POSTs that reset the cache, in order
    resets: tuple[str, ...] = ()
    #: the server keeps no cache from one request to the next (the embedded server)
    per_request: bool = False

    @property
    def assured(self) -> bool:
        """Whether every phase finds this server's cache in the same state by construction."""
        return self.kind != NONE or self.per_request


def _whole_cache_reset(client: OpenAIClient) -> tuple[tuple[str, ...], str] | None:
    """The reset a server that speaks only the OpenAI API answers: llama.cpp's slots, else
    vLLM's or SGLang's whole-cache reset (trying one resets the cache: harmless here)."""
    slots = client.slot_ids()
    if slots:
        paths = tuple(f"/slots/{i}?action=erase" for i in slots)
        # a llama-server started without --slot-save-path lists its slots but answers every
        # slot action 501: then it has no reset of its own
        if all(client.reset_cache(path) for path in paths):
            return paths, f"llama.cpp server: every slot erased ({len(slots)})"
    for path, name in WHOLE_CACHE_RESETS:
        if client.reset_cache(path):
            return (path,), f"{name} (POST {path})"
    return None


def _declared_policy(spec: ServerSpec, client: SyncClient, backend: str, kind: str) -> CachePolicy:
    """The policy ``kind`` the config declares for ``spec``, if the server can follow it."""
    name = spec.name
    if kind == NONE:
        per_request = backend == "embedded"
        how = PER_REQUEST if per_request else "nothing (declared cache_reset: none)"
        return CachePolicy(name, NONE, how, per_request=per_request)
    if kind == SALT:
        return CachePolicy(name, SALT, "a new nonce at the start of every prompt of each phase")
    if kind == RELOAD:
        if not can_unload(client):
            raise ServerSetupError(
                f"server {name!r}: cache_reset: reload needs Ollama's API (an unload), and this "
                "server speaks only the OpenAI API; set cache_reset to endpoint, salt or auto"
            )
        return CachePolicy(name, RELOAD, "unmeasured unload and load with the agents' options")
    found = _whole_cache_reset(client) if isinstance(client, OpenAIClient) else None
    if found is None:
        tried = ", ".join(["GET /slots"] + [f"POST {p}" for p, _ in WHOLE_CACHE_RESETS])
        raise ServerSetupError(
            f"server {name!r}: cache_reset: endpoint, but the server answers none of {tried} "
            "(llama.cpp's server needs --slots, and --slot-save-path to erase them); set "
            "cache_reset to salt or auto"
        )
    return CachePolicy(name, ENDPOINT, found[1], resets=found[0])


def resolve_policy(spec: ServerSpec, client: SyncClient, backend: str) -> CachePolicy:
    """``spec``'s cache policy, as declared, or for ``auto`` from what the server is: none for
    the embedded server, reload where Ollama's API can unload, else the server's own reset,
    else a salt."""
    if spec.cache_reset != AUTO:
        return _declared_policy(spec, client, backend, spec.cache_reset)
    if backend == "embedded":
        return _declared_policy(spec, client, backend, NONE)
    if can_unload(client):
        return _declared_policy(spec, client, backend, RELOAD)
    found = _whole_cache_reset(client) if isinstance(client, OpenAIClient) else None
    if found is not None:
        return CachePolicy(spec.name, ENDPOINT, found[1], resets=found[0])
    return CachePolicy(
        spec.name, SALT, "a new nonce at the start of every prompt of each phase (no reset found)"
    )


#: each policy before a phase, in words (the report's methodology)
PLANNED = {
    NONE: "nothing",
    RELOAD: "an unmeasured unload and load of each agent's model",
    ENDPOINT: "the server's own cache reset (vLLM /reset_prefix_cache, SGLang /flush_cache, "
    "llama.cpp's slots erased)",
    SALT: "a new nonce of the same length at the start of every prompt",
}


def planned_policy(spec: ServerSpec, backend: str) -> str:
    """What ``spec``'s cache policy will do before each phase, in words, before any server is
    asked (``auto`` is settled per run, from what the server answers)."""
    kind = spec.cache_reset
    if kind == AUTO and backend == "embedded":
        return f"none ({PER_REQUEST})"
    if kind == AUTO and (spec.api == "ollama" or backend == "ollama"):
        return f"reload ({PLANNED[RELOAD]})"
    if kind == AUTO:
        return f"auto: {PLANNED[ENDPOINT]} where the server answers one, else {PLANNED[SALT]}"
    return f"{kind} ({PLANNED[kind]}, declared)"


def new_salt() -> str:
    """A nonce never sent before, always of the same length: ``[1f0c9a3e] ``."""
    return f"[{secrets.token_hex(SALT_HEX_DIGITS // 2)}] "


@dataclass
class CacheState:
    """Every server's cache policy for one run, and how to reach the servers between phases."""

    policies: dict[str, CachePolicy]
    servers: Mapping[str, ServerSpec]
    urls: Mapping[str, str]
    timeouts: Timeouts
    backend: str
    #: what each server reset by a reload listed right before each reset: a model another
    #: client loaded during a phase would otherwise be unloaded unseen (the isolation check
    #: after the phases counts these too)
    held: dict[str, list[PsModel]] = field(default_factory=dict)

    @property
    def assured(self) -> bool:
        """Whether every server's cache is in the same state before each phase by construction."""
        return all(p.assured for p in self.policies.values())


def open_cache_state(
    servers: Mapping[str, ServerSpec],
    urls: Mapping[str, str],
    timeouts: Timeouts,
    backend: str,
) -> CacheState:
    """Each server's cache policy (:func:`resolve_policy`), for a run on ``urls``."""
    with ExitStack() as stack:
        clients = open_management_clients(stack, servers, urls, timeouts, backend)
        try:
            policies = {
                name: resolve_policy(servers.get(name, ServerSpec(name)), client, backend)
                for name, client in clients.items()
            }
        except ServerCallError as exc:
            raise _reset_failed(exc) from exc
    for policy in policies.values():
        log.info("server %s: cache policy %s (%s)", policy.server, policy.kind, policy.how)
    return CacheState(policies, servers, urls, timeouts, backend)


def warmup_plans(plans: Sequence[AgentPlan]) -> list[AgentPlan]:
    """Each agent's unmeasured warm-up: its first prompt, as long as in the measured phases,
    begun with a salt of its own (:func:`~mabench.measure.agents.first_call_warmup`)."""
    return [first_call_warmup(p, new_salt()) for p in plans]


def bring_to_same_cache_state(
    state: CacheState | None, plans: Sequence[AgentPlan]
) -> list[AgentPlan]:
    """Before a measured phase: reset every server whose policy has a reset (reload or
    endpoint), and return the plans to run, each agent on a salt-policy server with a new
    salt (``plans`` as they are without a ``state``: nothing to bring)."""
    if state is None:
        return list(plans)
    used = {p.info.server for p in plans}
    to_reset = [
        p for p in state.policies.values() if p.kind in (RELOAD, ENDPOINT) and p.server in used
    ]
    if to_reset:
        with ExitStack() as stack:
            wanted = {p.server: state.urls[p.server] for p in to_reset}
            clients = open_management_clients(
                stack, state.servers, wanted, state.timeouts, state.backend
            )
            try:
                for policy in to_reset:
                    held = state.held.setdefault(policy.server, [])
                    _reset(policy, clients[policy.server], plans, held)
            except ServerCallError as exc:
                raise _reset_failed(exc) from exc
    return [
        replace(p, salt=new_salt()) if state.policies[p.info.server].kind == SALT else p
        for p in plans
    ]


def resets_between_agents(state: CacheState | None, plans: Sequence[AgentPlan]) -> bool:
    """Whether agents run one after another must each find their server reset: some server
    whose own endpoint resets its cache serves more than one of ``plans``, so without one an
    agent alone would find the previous agent's prompts in its cache (the chat template's
    opening, a shared system prompt), which the agents started together do not. Not for a
    reload (Ollama's API): it would also load each agent's model unmeasured, hiding the reload
    that agents with other runner options pay one after another too."""
    if state is None:
        return False
    served = Counter(p.info.server for p in plans)
    return any(
        served[name] > 1 and policy.kind == ENDPOINT for name, policy in state.policies.items()
    )


def _reset(
    policy: CachePolicy, client: SyncClient, plans: Sequence[AgentPlan], held: list[PsModel]
) -> None:
    """One server's reset: its endpoints, or an unload verified and each agent's load (what
    the server listed before the unload is added to ``held``)."""
    if policy.kind == ENDPOINT:
        assert isinstance(client, OpenAIClient)
        for path in policy.resets:
            if not client.reset_cache(path):
                raise ServerSetupError(
                    f"server {policy.server!r}: its cache reset POST {path} answered as if it "
                    "did not exist any more; is another server now at its URL?"
                )
        return
    for entry in loaded_entries({policy.server: client}, "cache_reset")[policy.server]:
        if entry not in held:
            held.append(entry)
    isolation = force_unload({policy.server: client}, verify_timeout_s=60.0)
    if not isolation.verified:
        raise IsolationError(
            f"server {policy.server!r}: models still loaded after the unload that resets its "
            f"cache: {isolation.loaded_after}; another client may be using it"
        )
    for plan in plans:
        if plan.info.server == policy.server:
            client.load(plan.info.model, plan.info.options, keep_alive=-1)


def _reset_failed(exc: ServerCallError) -> RunFailed:
    info = msgspec.structs.replace(exc.info(), phase="cache_reset")
    return RunFailed(f"cache_reset failed on {exc.url}: {exc.message}", info)


def with_cache_policy(server: ServerInfo, state: CacheState) -> ServerInfo:
    """``server`` with the cache policy its run used."""
    policy = state.policies.get(server.name)
    if policy is None:
        return server
    return msgspec.structs.replace(server, cache_reset=policy.kind, cache_reset_how=policy.how)
