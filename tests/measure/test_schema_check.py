"""The published JSON schema and the Structs decide alike: random damage to real records is
rejected by both or accepted by both (JSON Schema's looser numbers aside), and a null where a
field is nullable is always valid, never an error of the check itself."""

from __future__ import annotations

import copy
import math
import random
from typing import Any

import jsonschema
import pytest

from mabench.datasets.synthetic import make_record, with_nulls
from mabench.measure.records import RecordError, RunRecord, record_schema

#: values a mutation puts somewhere in a record: every JSON type, and the edge cases of
#: numbers (bool vs int, integral float, NaN, an integer past 64 bits)
ODD_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    1,
    -1,
    1.0,
    2.5,
    -0.0,
    math.nan,
    2**70,
    "",
    "solo",
    "concurrent",
    "asyncio",
    [],
    ["solo", "solo"],
    {},
    {"x": 1},
]


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


def _mutate(data: dict[str, Any], rng: random.Random) -> tuple[dict[str, Any], Any]:
    """A copy of ``data`` damaged at one random place, and the value put there (if any)."""
    data = copy.deepcopy(data)
    path = rng.choice(_paths(data))
    parent = data
    for key in path[:-1]:
        parent = parent[key]
    what = rng.random()
    value: Any = None
    if what < 0.15 and isinstance(parent, dict):
        del parent[path[-1]]
    elif what < 0.25 and isinstance(parent, dict):
        parent["unexpected"] = value = rng.choice(ODD_VALUES)
    elif what < 0.3 and isinstance(parent, list):
        parent.append(copy.deepcopy(rng.choice(parent)) if parent else None)
    else:
        parent[path[-1]] = value = copy.deepcopy(rng.choice(ODD_VALUES))
    return data, value


def _accepted(data: dict[str, Any]) -> bool:
    try:
        RunRecord.from_json(data)
    except RecordError:
        return False
    return True


def _json_schema_only(value: Any) -> bool:
    """Values JSON Schema takes for a number or an integer that the Structs do not: a float
    with an integral value for an integer (``1.0``), NaN where JSON itself has none."""
    return isinstance(value, float) and (value.is_integer() or math.isnan(value))


@pytest.mark.parametrize("seed", range(4))
def test_the_schema_and_the_structs_decide_alike(seed: int) -> None:
    reference = jsonschema.Draft202012Validator(record_schema())
    rng = random.Random(seed)
    base = (make_record(seed) if seed % 2 else with_nulls(make_record(seed))).to_json()
    assert reference.is_valid(base) and _accepted(base)
    disagree = []
    rejected = 0
    for _ in range(150):
        data, value = _mutate(base, rng)
        valid = reference.is_valid(data)
        rejected += not valid
        if _accepted(data) != valid and not (valid and _json_schema_only(value)):
            disagree.append((value, valid, next(iter(reference.iter_errors(data)), None)))
    assert not disagree
    assert rejected > 0


def test_null_is_valid_wherever_a_field_is_nullable() -> None:
    """Every field the schema lets be null, set to null in a real record, is accepted by the
    Structs (the hand-written check raised TypeError on ``None < minimum`` instead)."""
    base = make_record(9).to_json()
    schema = record_schema()
    reference = jsonschema.Draft202012Validator(schema)
    tried = 0
    for path in _paths(base):
        data = copy.deepcopy(base)
        parent = data
        for key in path[:-1]:
            parent = parent[key]
        parent[path[-1]] = None
        if reference.is_valid(data):
            tried += 1
            assert _accepted(data), path
        else:
            assert not _accepted(data), path
    assert tried > 20
