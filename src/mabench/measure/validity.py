"""Checks that a run measured what it claims, made after its measured phases.

- Same work (:func:`compare_work`): every call sends the study's seed, so an agent's call in
  the solo phase (and in the sequential phase, where there is one) and the same call in the
  concurrent phase must generate the same tokens.
  Per (agent, call) the two phases' eval_count, done_reason and the sha256 of the response
  text are compared; a difference is never silent. Each call's prompt includes the previous
  answer, so after a first difference the later calls of that agent differ too: the first
  differing call of each agent is named.
- Isolation after (:func:`check_isolation_after`): the servers' /api/ps after the measured
  phases lists only what the agents' own loads left there (step 3: model and context
  length). Anything else means another client, or a leftover, shared a server while it was
  measured.

- Token counts (:func:`check_token_counts`): each call's token count as the server reported
  it (eval_count, usage.completion_tokens) against the text chunks it streamed: equal, or one
  more for the end-of-generation token. A server that miscounts makes every tokens-per-second
  figure of the run wrong.

- The same cache state (:func:`compare_cache_state`): per (agent, call) the prompt tokens
  the server took from its prompt cache in each phase (on Ollama's API, which reports no such
  count, the prompt tokens it evaluated: fewer when part of the prompt was cached) must be
  equal; where the servers say nothing, the cache policies (:mod:`mabench.measure.cache_state`)
  must have brought every server to the same state before each phase, else nobody knows.

:func:`check_validity` makes the first three checks of a run and turns the failed ones into its
flags; :func:`with_cache_check` adds the third.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence

import msgspec

from mabench.measure.errors import RunFailed
from mabench.measure.records import (
    CONCURRENT,
    SEQUENTIAL,
    SOLO,
    CacheCheck,
    CallRecord,
    ErrorInfo,
    IsolationAfter,
    PsModel,
    TokenCount,
    TokenCountCheck,
    Validity,
    WorkCheck,
    WorkComparison,
)

WORK_MISMATCH = "work_mismatch"
CACHE_DIFFER = "cache_differ"
CACHE_UNKNOWN = "cache_unknown"
ISOLATION_AFTER = "isolation_after"
TOKEN_COUNT_DIFFERS = "token_count_differs"

log = logging.getLogger(__name__)


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _eval_count(call: CallRecord) -> int | None:
    return None if call.server_metrics is None else call.server_metrics.eval_count


def _compare(solo: CallRecord, concurrent: CallRecord, texts: bool = True) -> WorkComparison:
    solo_sha, conc_sha = text_sha256(solo.response_text), text_sha256(concurrent.response_text)
    solo_count, conc_count = _eval_count(solo), _eval_count(concurrent)
    # prompts begun with different salts (cache policy salt) generate different texts, and so
    # does a server whose numbers depend on what it batches together (``texts`` False)
    compared_text = texts and solo.prompt_salt == concurrent.prompt_salt
    return WorkComparison(
        agent=solo.agent,
        call_index=solo.call_index,
        solo_eval_count=solo_count,
        concurrent_eval_count=conc_count,
        solo_done_reason=solo.done_reason,
        concurrent_done_reason=concurrent.done_reason,
        solo_text_sha256=solo_sha,
        concurrent_text_sha256=conc_sha,
        matched=(
            solo_count == conc_count
            and solo.done_reason == concurrent.done_reason
            and (solo_sha == conc_sha or not compared_text)
        ),
        compared_text=compared_text,
    )


def compare_work(calls: Sequence[CallRecord], alone: str = SOLO, texts: bool = True) -> WorkCheck:
    """Each (agent, call) measured in phase ``alone`` (solo, or sequential) and in the
    concurrent phase, compared; in the order of phase ``alone``. ``texts``: the answers'
    texts too (else token counts and stop reasons only)."""
    concurrent = {(c.agent, c.call_index): c for c in calls if c.phase == CONCURRENT}
    compared = [
        _compare(c, concurrent[(c.agent, c.call_index)], texts)
        for c in calls
        if c.phase == alone and (c.agent, c.call_index) in concurrent
    ]
    first: dict[str, int] = {}
    for comparison in compared:
        if not comparison.matched:
            first[comparison.agent] = min(
                first.get(comparison.agent, comparison.call_index), comparison.call_index
            )
    return WorkCheck(matched=not first, calls=compared, first_divergence=first)


def describe_divergence(work: WorkCheck) -> str:
    """``collector from call 0 (eval_count 40 alone, 20 concurrent), insight from call 1``."""
    parts = []
    for agent, index in work.first_divergence.items():
        c = next(x for x in work.calls if x.agent == agent and x.call_index == index)
        what = []
        if c.solo_eval_count != c.concurrent_eval_count:
            what.append(
                f"eval_count {c.solo_eval_count} alone, {c.concurrent_eval_count} concurrent"
            )
        if c.solo_done_reason != c.concurrent_done_reason:
            what.append(
                f"done_reason {c.solo_done_reason} alone, {c.concurrent_done_reason} concurrent"
            )
        if c.solo_text_sha256 != c.concurrent_text_sha256:
            what.append("different text")
        parts.append(f"{agent} from call {index} ({'; '.join(what)})")
    return ", ".join(parts)


def _tagged(name: str) -> str:
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def _same(loaded: PsModel, expected: PsModel) -> bool:
    """The same model with the same runner configuration, as far as the server tells."""
    if _tagged(loaded.name) != _tagged(expected.name):
        return False
    known = loaded.context_length is not None and expected.context_length is not None
    return not known or loaded.context_length == expected.context_length


def check_isolation_after(
    expected: dict[str, list[PsModel]], loaded: dict[str, list[PsModel]]
) -> IsolationAfter:
    """Whatever a server lists after the phases must be something an agent's load left."""
    unexpected = {
        server: extra
        for server, models in loaded.items()
        if (extra := [m for m in models if not any(_same(m, e) for e in expected.get(server, []))])
    }
    return IsolationAfter(
        expected=expected, loaded=loaded, unexpected=unexpected, verified=not unexpected
    )


def describe_unexpected(isolation: IsolationAfter) -> str:
    """``server a: other:7b (context 4096)``."""
    return "; ".join(
        f"server {server}: "
        + ", ".join(
            m.name + ("" if m.context_length is None else f" (context {m.context_length})")
            for m in models
        )
        for server, models in isolation.unexpected.items()
    )


def _token_count(call: CallRecord) -> TokenCount | None:
    """``call``'s reported and streamed token counts, when the server reported one and the
    client kept the arrivals."""
    m, arrivals = call.server_metrics, call.token_arrivals_us
    if m is None or arrivals is None or m.eval_count_source == "stream":
        return None
    return TokenCount(
        agent=call.agent,
        phase=call.phase,
        call_index=call.call_index,
        reported=m.eval_count,
        streamed=len(arrivals),
    )


def _most_tokens(call: CallRecord, streamed: int) -> int:
    """The most tokens ``call``'s streamed text can have come from, the end token included.

    In an ASCII text every token brings text of its own, so each is a chunk: ``streamed + 1``.
    A character split over several byte-level tokens (an emoji is often three) arrives as one
    chunk once complete (Ollama, llama.cpp and the embedded server all hold the bytes back),
    so otherwise only the bytes bound it: each token at least one."""
    text = call.response_text
    return streamed + 1 if text.isascii() else len(text.encode("utf-8", "surrogatepass")) + 1


def check_token_counts(calls: Sequence[CallRecord]) -> TokenCountCheck:
    """Each call's reported token count against the text chunks it streamed: never fewer (a
    chunk carries at least one token), and never more than :func:`_most_tokens`."""
    by_key = {(c.agent, c.phase, c.call_index): c for c in calls}
    counts = [c for c in map(_token_count, calls) if c is not None]
    differing = [
        c
        for c in counts
        if not c.streamed
        <= c.reported
        <= _most_tokens(by_key[(c.agent, c.phase, c.call_index)], c.streamed)
    ]
    return TokenCountCheck(matched=not differing, compared=len(counts), differing=differing)


def describe_token_counts(check: TokenCountCheck) -> str:
    """``collector solo call 0: 12 reported, 8 streamed`` (the first three, and how many)."""
    shown = [
        f"{c.agent} {c.phase} call {c.call_index}: {c.reported} reported, {c.streamed} streamed"
        for c in check.differing[:3]
    ]
    more = len(check.differing) - len(shown)
    return "; ".join(shown) + (f" (and {more} more)" if more else "")


def check_validity(
    calls: Sequence[CallRecord],
    after: IsolationAfter,
    on_work_mismatch: str,
    compare_texts: bool = True,
) -> Validity:
    """The checks of one run; each failed one adds its flag, and a work mismatch fails the
    run instead (:class:`RunFailed`) when the study says ``on_work_mismatch: fail``.
    ``compare_texts``: the same work includes the same answers (see
    :attr:`mabench.config.Study.same_text`)."""
    work = compare_work(calls, texts=compare_texts)
    sequential = (
        compare_work(calls, SEQUENTIAL, compare_texts)
        if any(c.phase == SEQUENTIAL for c in calls)
        else None
    )
    flags = []
    for alone, check in ((SOLO, work), (SEQUENTIAL, sequential)):
        if check is not None and not check.matched:
            _work_mismatch(alone, check, on_work_mismatch)
            if WORK_MISMATCH not in flags:
                flags.append(WORK_MISMATCH)
    if not after.verified:
        log.warning(
            "after the measured phases the servers held what no agent loaded: %s (run flagged)",
            describe_unexpected(after),
        )
        flags.append(ISOLATION_AFTER)
    token_counts = check_token_counts(calls)
    if not token_counts.matched:
        log.warning(
            "the servers reported other token counts than they streamed: %s (run flagged)",
            describe_token_counts(token_counts),
        )
        flags.append(TOKEN_COUNT_DIFFERS)
    return Validity(
        work=work,
        flags=flags,
        isolation_after=after,
        sequential_work=sequential,
        token_counts=token_counts,
    )


def _work_mismatch(alone: str, work: WorkCheck, on_work_mismatch: str) -> None:
    """Phase ``alone`` and the concurrent phase did different work: fail the run, or log it
    (the caller flags it)."""
    where = describe_divergence(work)
    if on_work_mismatch == "fail":
        message = (
            f"the {alone} and the concurrent phase did different work: {where}; the study "
            "sets on_work_mismatch: fail (flag records such a run and marks it instead)"
        )
        info = ErrorInfo(
            kind=WORK_MISMATCH, message=message, url=None, phase="validity", status=None
        )
        raise RunFailed(message, info, agent=next(iter(work.first_divergence)))
    log.warning(
        "the %s and the concurrent phase did different work: %s (run flagged)", alone, where
    )


def _cache_evidence(call: CallRecord) -> tuple[str, int] | None:
    """What the server said of the call's cache hits: the cached prompt tokens it reported,
    or on Ollama's API the prompt tokens it evaluated (an unsalted prompt only: a salt may
    tokenize to another length); None where it said nothing."""
    metrics = call.server_metrics
    if metrics is None:
        return None
    if metrics.cached_prompt_tokens is not None:
        return "cached", metrics.cached_prompt_tokens
    ollama = metrics.prompt_eval_count_source == "final_metrics"
    if ollama and call.prompt_salt is None and metrics.prompt_eval_count is not None:
        return "evaluated", metrics.prompt_eval_count
    return None


def _calls_with_the_same_prompts(calls: Sequence[CallRecord]) -> dict[str, int]:
    """Per agent, how many of its first calls sent the same prompt in every phase: each prompt
    holds the previous answer, so after the first answer that differs between phases (a work
    mismatch, or salted prompts) the later prompts differ too."""
    answers: dict[tuple[str, int], set[str]] = {}
    for call in calls:
        answers.setdefault((call.agent, call.call_index), set()).add(call.response_text)
    same: dict[str, int] = {}
    for (agent, index), texts in sorted(answers.items()):
        limit = same.setdefault(agent, len(calls))
        if len(texts) > 1 and index + 1 < limit:
            same[agent] = index + 1
    return same


def _resets_emptied(calls: Sequence[CallRecord]) -> bool:
    """Whether the servers said every reset left nothing cached: in each phase, the first call
    each server served (the first to stream a token: agents started together send at once, and
    the server picks), and in the phases of agents alone, each agent's first call (its server
    was reset before it), reported no cached prompt token. False where one said nothing."""
    first_served: dict[tuple[str, str], CallRecord] = {}
    for call in sorted(calls, key=_served_at):
        first_served.setdefault((call.phase, call.server), call)
    alone_first = [c for c in calls if c.phase != CONCURRENT and c.call_index == 0]
    return all(
        c.server_metrics is not None and c.server_metrics.cached_prompt_tokens == 0
        for c in [*first_served.values(), *alone_first]
    )


def _served_at(call: CallRecord) -> int:
    """When the server began to answer ``call``: its first token, else its end."""
    return call.t_first_token_ns if call.t_first_token_ns is not None else call.t_done_ns


def compare_cache_state(calls: Sequence[CallRecord], reset_before_each_phase: bool) -> CacheCheck:
    """Did every phase find the same prompt-cache state? Per (agent, call), what the servers
    said of each phase's cache hits, compared; ``reset_before_each_phase``: every server's
    cache policy brought it to the same state before each phase (or it keeps none).

    Hits that differ although every reset was seen to empty the cache (:func:`_resets_emptied`)
    came from within the phases (``within``): agents taking turns on one slot lose the prefix
    an agent alone reuses from its previous call, agents sharing a prompt prefix may gain one.
    That is part of what running them together costs or saves, not one phase reusing another's
    prompts, so it is recorded and not flagged."""
    by_call: dict[tuple[str, int], list[tuple[str, int] | None]] = {}
    same_prompts = _calls_with_the_same_prompts(calls)
    for call in calls:
        evidence = _cache_evidence(call)
        if evidence and evidence[0] == "evaluated" and call.call_index >= same_prompts[call.agent]:
            continue  # its prompt holds an answer that differed: its length may differ too
        by_call.setdefault((call.agent, call.call_index), []).append(evidence)
    first: dict[str, int] = {}
    known = True
    for (agent, index), seen in sorted(by_call.items()):
        if len(seen) < 2 or None in seen:
            known = False
        elif len(set(seen)) > 1:
            first.setdefault(agent, index)
    if first:
        status = "within" if reset_before_each_phase and _resets_emptied(calls) else "differ"
    elif known and by_call:
        status = "equal"
    else:
        status = "reset" if reset_before_each_phase else "unknown"
    return CacheCheck(status=status, first_difference=first)


def with_cache_check(validity: Validity, cache: CacheCheck) -> Validity:
    """``validity`` with the cache check, flagged ``cache_differ`` when the phases saw
    different cache hits and ``cache_unknown`` when nobody can tell."""
    flags = list(validity.flags)
    if cache.status == "differ":
        where = ", ".join(f"{a} from call {i}" for a, i in cache.first_difference.items())
        log.warning("the phases found different prompt-cache hits: %s (run flagged)", where)
        flags.append(CACHE_DIFFER)
    elif cache.status == "within":
        where = ", ".join(f"{a} from call {i}" for a, i in cache.first_difference.items())
        log.info(
            "the phases found different prompt-cache hits (%s) after resets that emptied every "
            "cache: the agents' turns within a phase changed what could be reused",
            where,
        )
    elif cache.status == "unknown":
        log.warning(
            "the servers reported no cache hits and a server was not reset before each phase "
            "(cache_reset: none): the phases may have reused each other's prompts (run flagged)"
        )
        flags.append(CACHE_UNKNOWN)
    return msgspec.structs.replace(validity, cache=cache, flags=flags)


__all__ = [
    "CACHE_DIFFER",
    "CACHE_UNKNOWN",
    "ISOLATION_AFTER",
    "TOKEN_COUNT_DIFFERS",
    "WORK_MISMATCH",
    "check_isolation_after",
    "check_token_counts",
    "check_validity",
    "compare_cache_state",
    "compare_work",
    "describe_divergence",
    "describe_token_counts",
    "describe_unexpected",
    "text_sha256",
    "with_cache_check",
]
