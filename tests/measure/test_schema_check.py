"""The compiled schema check never accepts what jsonschema rejects, and accepts real records."""

from __future__ import annotations

import copy
import math
import random
from typing import Any

import jsonschema
import pytest

from mabench.datasets.synthetic import make_record
from mabench.measure.records import record_schema
from mabench.measure.schema_check import UnsupportedSchema, compile_check

#: values a mutation puts somewhere in a record: every JSON type, and the edge cases of the
#: check's conservative shortcuts (bool vs int, integral float, NaN, huge int)
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


def _mutate(data: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    data = copy.deepcopy(data)
    path = rng.choice(_paths(data))
    parent = data
    for key in path[:-1]:
        parent = parent[key]
    what = rng.random()
    if what < 0.15 and isinstance(parent, dict):
        del parent[path[-1]]
    elif what < 0.25 and isinstance(parent, dict):
        parent["unexpected"] = rng.choice(ODD_VALUES)
    elif what < 0.3 and isinstance(parent, list):
        parent.append(copy.deepcopy(rng.choice(parent)) if parent else None)
    else:
        parent[path[-1]] = copy.deepcopy(rng.choice(ODD_VALUES))
    return data


def test_real_records_are_accepted() -> None:
    check = compile_check(record_schema())
    for i in range(0, 400, 37):
        assert check(make_record(i).to_json()), i


@pytest.mark.parametrize("seed", range(4))
def test_never_accepts_an_invalid_record(seed: int) -> None:
    check = compile_check(record_schema())
    reference = jsonschema.Draft202012Validator(record_schema())
    rng = random.Random(seed)
    base = make_record(seed).to_json()
    accepted_invalid = []
    invalid = 0
    for _ in range(150):
        data = _mutate(base, rng)
        if not reference.is_valid(data):
            invalid += 1
            if check(data):
                accepted_invalid.append(next(reference.iter_errors(data)).message)
    assert not accepted_invalid
    assert invalid > 0


SMALL_SCHEMAS: list[dict[str, Any]] = [
    # an object that is not "exactly these keys": optional properties, typed extras
    {
        "type": "object",
        "properties": {"a": {"type": "integer", "minimum": 0}, "b": {"type": ["string", "null"]}},
        "required": ["a"],
        "additionalProperties": {"type": "number"},
    },
    {"type": "array", "items": {"enum": ["x", "y"]}, "minItems": 1, "uniqueItems": True},
    {"anyOf": [{"type": "null"}, {"type": "object", "properties": {}, "required": []}]},
    {"const": 1},
    {"enum": [0, 1, "1"]},
    {"type": "number", "minimum": 0},
    {"properties": {"a": {"const": "z"}}},  # object keywords without "type"
    {"items": {"type": "boolean"}},
]


@pytest.mark.parametrize("schema", SMALL_SCHEMAS)
def test_each_keyword_is_sound(schema: dict[str, Any]) -> None:
    check = compile_check(schema)
    reference = jsonschema.Draft202012Validator(schema)
    values = [
        *ODD_VALUES,
        {"a": 1},
        {"a": 1, "b": None, "c": 2.5},
        {"a": -1},
        {"a": True},
        {"a": 1, "c": "s"},
        {"b": "s"},
        {"a": "z"},
        ["x"],
        ["x", "x"],
        ["x", "y"],
        [True, False],
        [1, True],
    ]
    for value in values:
        if check(value):
            assert reference.is_valid(value), (schema, value)
    assert any(check(v) for v in values)


def test_unsupported_keyword_names_it_and_where() -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string", "pattern": "^a"}}}
    with pytest.raises(UnsupportedSchema, match=r"#/properties/name: keyword\(s\) \['pattern'\]"):
        compile_check(schema)
    with pytest.raises(UnsupportedSchema, match="not a reference into this schema"):
        compile_check({"$ref": "https://example.org/other.json"})
