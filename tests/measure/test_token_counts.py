"""The token-count check: a server's reported count against the text it streamed, with what
byte-level tokenizers do to characters that span tokens."""

from __future__ import annotations

import msgspec
import pytest

from mabench.datasets.synthetic import make_record
from mabench.measure.validity import check_token_counts


def _call(text: str, reported: int, chunks: int):
    call = make_record(1).calls[0]
    metrics = msgspec.structs.replace(
        call.server_metrics, eval_count=reported, eval_count_source="final_metrics"
    )
    arrivals = [1000 * i for i in range(chunks)]
    return msgspec.structs.replace(
        call, response_text=text, token_arrivals_us=arrivals, server_metrics=metrics
    )


@pytest.mark.parametrize(
    ("text", "reported", "chunks", "counted_right"),
    [
        ("Red, green and blue.", 5, 5, True),  # every token a chunk
        ("Red, green and blue.", 6, 5, True),  # and the end token
        ("Red, green and blue.", 7, 5, False),  # two more than streamed: miscounted
        ("Red, green and blue.", 4, 5, False),  # fewer than the chunks: impossible
        # what the embedded server streamed for "List three colours." (6 tokens, 4 chunks):
        # the emoji is three byte-level tokens, sent as one chunk once complete
        ("🌞\n*Red", 6, 4, True),
        ("🌞\n*Red", 11, 4, False),  # more tokens than the text has bytes (9) + the end
    ],
)
def test_a_count_is_checked_against_what_the_text_can_hold(text, reported, chunks, counted_right):
    check = check_token_counts([_call(text, reported, chunks)])
    assert check.compared == 1
    assert check.matched is counted_right
