"""The same-work check where a server's texts may part for the same work, and the cache check
where hits differ within the phases."""

from __future__ import annotations

from msgspec.structs import replace

from mabench.config import study_from_dict
from mabench.datasets.synthetic import make_record
from mabench.measure.records import Validity
from mabench.measure.validity import (
    CACHE_DIFFER,
    compare_cache_state,
    compare_work,
    with_cache_check,
)


def _texts_parted_at_call_1():
    calls = list(make_record(4).calls)
    i = next(k for k, c in enumerate(calls) if c.phase == "concurrent" and c.call_index == 1)
    calls[i] = replace(calls[i], response_text=calls[i].response_text + " (batched)")
    return calls, calls[i].agent


def test_texts_are_compared_unless_the_server_is_not_batch_invariant():
    calls, agent = _texts_parted_at_call_1()
    strict = compare_work(calls)
    assert not strict.matched and strict.first_divergence == {agent: 1}
    counts_only = compare_work(calls, texts=False)
    assert counts_only.matched and not any(c.compared_text for c in counts_only.calls)


def test_a_different_token_count_is_other_work_whatever_is_compared():
    calls = list(make_record(4).calls)
    i = next(k for k, c in enumerate(calls) if c.phase == "concurrent")
    metrics = replace(calls[i].server_metrics, eval_count=calls[i].server_metrics.eval_count + 1)
    calls[i] = replace(calls[i], server_metrics=metrics)
    assert not compare_work(calls, texts=False).matched


def test_only_llama_server_studies_compare_token_counts_alone():
    base = {"study": "t", "configs": [{"id": "c1", "scenario": "chimera_homo"}]}
    assert study_from_dict(base).same_text
    assert not study_from_dict({**base, "backend": {"kind": "llama_server"}}).same_text


def _with_cached(calls, cached):
    """``calls`` with the cached prompt tokens ``cached(call)`` reported for each."""
    return [
        replace(c, server_metrics=replace(c.server_metrics, cached_prompt_tokens=cached(c)))
        for c in calls
    ]


def _turns_on_one_slot(call):
    """Alone, each agent's second call reuses its first call's prefix (30 tokens); together on
    one slot, the other agent's call came between them and nothing is reused."""
    return 30 if call.call_index == 1 and call.phase != "concurrent" else 0


def test_hits_that_differ_within_phases_after_resets_that_emptied_the_cache_are_not_flagged():
    calls = _with_cached(make_record(4).calls, _turns_on_one_slot)
    check = compare_cache_state(calls, reset_before_each_phase=True)
    assert check.status == "within" and set(check.first_difference.values()) == {1}
    validity = with_cache_check(
        Validity(work=compare_work(calls), flags=[], isolation_after=None), check
    )
    assert validity.flags == []


def test_a_reset_that_left_something_cached_or_no_reset_is_flagged():
    calls = make_record(4).calls
    first_concurrent = min(
        (c for c in calls if c.phase == "concurrent"), key=lambda c: c.t_first_token_ns
    )

    def leaked(call):  # the first call after the reset found the other phase's prompt
        return 100 if call is first_concurrent else _turns_on_one_slot(call)

    for cached, assured in ((leaked, True), (_turns_on_one_slot, False)):
        check = compare_cache_state(_with_cached(calls, cached), reset_before_each_phase=assured)
        assert check.status == "differ"
        flagged = with_cache_check(
            Validity(work=compare_work(calls), flags=[], isolation_after=None), check
        )
        assert flagged.flags == [CACHE_DIFFER]


def test_the_first_call_served_after_a_reset_is_the_first_to_stream_not_the_first_sent():
    """Agents started together send at once and the server picks: on one slot the call sent
    first may be served second, finding the 7 tokens every agent's prompt opens with."""
    calls = _with_cached(make_record(4).calls, _turns_on_one_slot)
    together = sorted((c for c in calls if c.phase == "concurrent"), key=lambda c: c.t_sent_ns)
    sent_first, served_first = together[0], together[1]
    late = served_first.t_first_token_ns + 1_000_000
    calls = [
        replace(
            c,
            t_first_token_ns=late,
            server_metrics=replace(c.server_metrics, cached_prompt_tokens=7),
        )
        if c is sent_first
        else c
        for c in calls
    ]
    assert compare_cache_state(calls, reset_before_each_phase=True).status == "within"
