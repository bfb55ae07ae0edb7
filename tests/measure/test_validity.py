"""The same-work check: what it compares where a server's texts may part for the same work."""

from __future__ import annotations

from msgspec.structs import replace

from mabench.config import study_from_dict
from mabench.datasets.synthetic import make_record
from mabench.measure.validity import compare_work


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
