"""Checks that a run measured what it claims, made after its measured phases.

- Same work (:func:`compare_work`): every call sends the study's seed, so an agent's call in
  the solo phase and the same call in the concurrent phase must generate the same tokens.
  Per (agent, call) the two phases' eval_count, done_reason and the sha256 of the response
  text are compared; a difference is never silent. Each call's prompt includes the previous
  answer, so after a first difference the later calls of that agent differ too: the first
  differing call of each agent is named.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from mabench.measure.records import CONCURRENT, SOLO, CallRecord, WorkCheck, WorkComparison

WORK_MISMATCH = "work_mismatch"


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _eval_count(call: CallRecord) -> int | None:
    return None if call.server_metrics is None else call.server_metrics.eval_count


def _compare(solo: CallRecord, concurrent: CallRecord) -> WorkComparison:
    solo_sha, conc_sha = text_sha256(solo.response_text), text_sha256(concurrent.response_text)
    solo_count, conc_count = _eval_count(solo), _eval_count(concurrent)
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
            and solo_sha == conc_sha
        ),
    )


def compare_work(calls: Sequence[CallRecord]) -> WorkCheck:
    """Each (agent, call) measured in both phases, compared; in the order of the solo phase."""
    concurrent = {(c.agent, c.call_index): c for c in calls if c.phase == CONCURRENT}
    compared = [
        _compare(c, concurrent[(c.agent, c.call_index)])
        for c in calls
        if c.phase == SOLO and (c.agent, c.call_index) in concurrent
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


__all__ = ["WORK_MISMATCH", "compare_work", "describe_divergence", "text_sha256"]
