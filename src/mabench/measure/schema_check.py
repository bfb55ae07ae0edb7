"""A JSON Schema compiled into a fast, conservative acceptance check.

:func:`compile_check` turns a schema into a function ``check(value) -> bool`` built from one
small closure per schema node. ``True`` means the value is valid under the schema (Draft
2020-12, as ``jsonschema`` decides). ``False`` means only "not shown valid": the check is
conservative where exactness would cost time (an integer written as ``1.0``, NaN under a
``minimum``, unhashable items under ``uniqueItems``), so the caller asks the reference
validator (``jsonschema``) whenever the check says ``False``, and that validator's verdict
and message stand. A run record, which validates on this path in ~40 µs instead of ~6 ms
with ``jsonschema`` or ~0.3 ms with ``fastjsonschema``, is read at the speed of parsing it.

Only the keywords the run-record schema uses are implemented. A schema with any other
keyword raises :class:`UnsupportedSchema` when compiled, naming the keyword and where it is,
so a schema change cannot silently weaken validation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

Check = Callable[[Any], bool]

#: keywords that do not constrain a value
ANNOTATIONS = frozenset(
    {"$schema", "$id", "$comment", "$defs", "title", "description", "default", "examples"}
)
#: keywords compile_check implements (exactly or conservatively)
SUPPORTED = frozenset(
    {
        "type",
        "enum",
        "const",
        "minimum",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "minItems",
        "uniqueItems",
        "anyOf",
        "$ref",
    }
)


class UnsupportedSchema(ValueError):
    """The schema uses a keyword (or form of one) that :func:`compile_check` does not
    implement; implement it in ``mabench.measure.schema_check`` or validate with ``jsonschema``."""


def _accept(value: Any) -> bool:
    return True


def _is_number(value: Any) -> bool:
    return type(value) is int or type(value) is float


#: JSON type -> exact Python types a value of it has when parsed by ``json`` (bool is not an
#: integer; an integral float such as 1.0 is left to the reference validator)
_TYPE_TESTS: dict[str, Check] = {
    "string": lambda v: type(v) is str,
    "integer": lambda v: type(v) is int,
    "number": _is_number,
    "boolean": lambda v: v is True or v is False,
    "object": lambda v: type(v) is dict,
    "array": lambda v: type(v) is list,
    "null": lambda v: v is None,
}


#: JSON type -> the Python types ``json`` parses a value of it into (exactly: bool is no
#: integer here, and an integral float such as 1.0 is left to the reference validator)
_PYTHON_TYPES: dict[str, frozenset[type]] = {
    "string": frozenset({str}),
    "integer": frozenset({int}),
    "number": frozenset({int, float}),
    "boolean": frozenset({bool}),
    "object": frozenset({dict}),
    "array": frozenset({list}),
    "null": frozenset({type(None)}),
}


def _python_types(schema: Any) -> frozenset[type] | None:
    """The exact Python types a ``{"type": ...}`` schema accepts, or None for other schemas."""
    if not isinstance(schema, Mapping) or "type" not in schema:
        return None
    names = [schema["type"]] if isinstance(schema["type"], str) else schema["type"]
    if not all(isinstance(t, str) and t in _PYTHON_TYPES for t in names):
        return None
    return frozenset().union(*(_PYTHON_TYPES[t] for t in names))


def compile_check(schema: Mapping[str, Any]) -> Check:
    """The acceptance check of ``schema`` (a JSON Schema document, Draft 2020-12)."""
    return _Compiler(schema).node(schema, "#")


class _Compiler:
    def __init__(self, root: Mapping[str, Any]) -> None:
        self.root = root
        self.base = str(root.get("$id", ""))
        self.refs: dict[str, Check] = {}

    def ref(self, ref: str, where: str) -> Check:
        local = ref.removeprefix(self.base) if self.base else ref
        if not local.startswith("#/"):
            raise UnsupportedSchema(f"{where}: $ref {ref!r} is not a reference into this schema")
        if local not in self.refs:
            target: Any = self.root
            for part in local[2:].split("/"):
                target = target[part.replace("~1", "/").replace("~0", "~")]
            cell: list[Check] = []
            self.refs[local] = lambda v: cell[0](v)  # resolved below; allows recursion
            cell.append(self.node(target, local))
            self.refs[local] = cell[0]
        return self.refs[local]

    def node(self, schema: Any, where: str) -> Check:
        if schema is True or schema == {}:
            return _accept
        if not isinstance(schema, Mapping):
            raise UnsupportedSchema(f"{where}: schema {schema!r} is not an object")
        unknown = set(schema) - SUPPORTED - ANNOTATIONS
        if unknown:
            raise UnsupportedSchema(
                f"{where}: keyword(s) {sorted(unknown)} not implemented by "
                "mabench.measure.schema_check; implement them there or validate with jsonschema"
            )
        fused = self.fused(schema, where)
        if fused is not None:
            return fused
        checks: list[Check] = []
        if "$ref" in schema:
            checks.append(self.ref(schema["$ref"], where))
        if "type" in schema:
            checks.append(self.type_check(schema["type"], where))
        if "enum" in schema:
            checks.append(self.one_of_values(schema["enum"], f"{where}/enum"))
        if "const" in schema:
            checks.append(self.one_of_values([schema["const"]], f"{where}/const"))
        if "minimum" in schema:
            low = schema["minimum"]
            # NaN fails `>=`: conservative (the reference validator accepts it)
            checks.append(lambda v: not _is_number(v) or v >= low)
        if {"properties", "required", "additionalProperties"} & set(schema):
            checks.append(self.object_check(schema, where))
        if {"items", "minItems", "uniqueItems"} & set(schema):
            checks.append(self.array_check(schema, where))
        if "anyOf" in schema:
            branches = [self.node(s, f"{where}/anyOf/{i}") for i, s in enumerate(schema["anyOf"])]
            # null first: the cheapest branch decides most optional values
            branches.sort(key=lambda c: c is not _TYPE_TESTS["null"])

            def any_of(v: Any) -> bool:
                for branch in branches:  # noqa: SIM110 (no generator per call: hot path)
                    if branch(v):
                        return True
                return False

            checks.append(any_of)
        if not checks:
            return _accept
        if len(checks) == 1:
            return checks[0]

        def every(v: Any) -> bool:
            for check in checks:  # noqa: SIM110 (no generator per call: hot path)
                if not check(v):
                    return False
            return True

        return every

    def fused(self, schema: Mapping[str, Any], where: str) -> Check | None:
        """One closure for the schema shapes a run record is made of (a typed leaf, a number
        with a minimum, an object of exactly its required properties, a typed array), instead
        of one per keyword; ``None`` for any other shape."""
        keys = set(schema) - ANNOTATIONS
        kind = schema.get("type")
        if not isinstance(kind, str) or kind not in _TYPE_TESTS:
            return None
        if keys == {"type"} or (
            kind == "object"
            and keys == {"type", "additionalProperties"}
            and schema["additionalProperties"] in (True, {})
        ):
            return _TYPE_TESTS[kind]
        if keys == {"type", "minimum"} and kind in ("integer", "number"):
            low = schema["minimum"]
            if kind == "integer":
                return lambda v: type(v) is int and v >= low
            return lambda v: (type(v) is int or type(v) is float) and v >= low
        if (
            kind == "object"
            and keys == {"type", "properties", "required", "additionalProperties"}
            and schema["additionalProperties"] is False
            and set(schema["required"]) == set(schema["properties"])
        ):
            # properties that only constrain the type (most leaves) are checked in the loop,
            # without a call each; the others by their compiled check
            typed: list[tuple[str, frozenset[type]]] = []
            bounded: list[tuple[str, frozenset[type], Any]] = []
            nested: list[tuple[str, Check]] = []
            for name, sub in schema["properties"].items():
                types = _python_types(sub)
                if types is not None and set(sub) - ANNOTATIONS == {"type"}:
                    typed.append((name, types))
                elif types is not None and set(sub) - ANNOTATIONS == {"type", "minimum"}:
                    bounded.append((name, types, sub["minimum"]))
                else:
                    nested.append((name, self.node(sub, f"{where}/properties/{name}")))
            known = frozenset(schema["properties"])

            def exact_object(v: Any) -> bool:
                if type(v) is not dict or v.keys() != known:
                    return False
                for name, types in typed:
                    if type(v[name]) not in types:
                        return False
                for name, types, low in bounded:
                    x = v[name]
                    if type(x) not in types or x < low:
                        return False
                for name, check in nested:  # noqa: SIM110 (no generator per call: hot path)
                    if not check(v[name]):
                        return False
                return True

            return exact_object
        if kind == "array" and keys == {"type", "items"}:
            item = self.node(schema["items"], f"{where}/items")

            def typed_array(v: Any) -> bool:
                if type(v) is not list:
                    return False
                for x in v:  # noqa: SIM110 (no generator per call: hot path)
                    if not item(x):
                        return False
                return True

            return typed_array
        return None

    def type_check(self, types: Any, where: str) -> Check:
        names = [types] if isinstance(types, str) else list(types)
        unknown = [t for t in names if t not in _TYPE_TESTS]
        if unknown:
            raise UnsupportedSchema(f"{where}/type: unknown type(s) {unknown}")
        tests = [_TYPE_TESTS[t] for t in names]
        if len(tests) == 1:
            return tests[0]
        return lambda v: any(t(v) for t in tests)

    def one_of_values(self, values: list[Any], where: str) -> Check:
        if not values or not all(type(x) in (str, int) for x in values):
            raise UnsupportedSchema(f"{where}: only strings and integers are implemented")
        allowed = frozenset((type(x), x) for x in values)  # 1 and True stay apart
        return lambda v: (type(v) in (str, int)) and (type(v), v) in allowed

    def object_check(self, schema: Mapping[str, Any], where: str) -> Check:
        props = {
            name: self.node(sub, f"{where}/properties/{name}")
            for name, sub in (schema.get("properties") or {}).items()
        }
        required = frozenset(schema.get("required") or ())
        extra = schema.get("additionalProperties", True)
        known = frozenset(props)
        items = list(props.items())
        if extra is False and required == known:
            # the common case: exactly these keys, each valid
            def exact(v: Any) -> bool:
                if type(v) is not dict:
                    return True  # object keywords do not constrain other types
                if v.keys() != known:
                    return False
                for name, check in items:  # noqa: SIM110 (no generator per call: hot path)
                    if not check(v[name]):
                        return False
                return True

            return exact
        extra_check = (
            None if isinstance(extra, bool) else self.node(extra, f"{where}/additionalProperties")
        )

        def general(v: Any) -> bool:
            if type(v) is not dict:
                return True  # object keywords do not constrain other types
            if not required <= v.keys():
                return False
            for key, value in v.items():
                check = props.get(key)
                if check is not None:
                    if not check(value):
                        return False
                elif extra is False or (extra_check is not None and not extra_check(value)):
                    return False
            return True

        return general

    def array_check(self, schema: Mapping[str, Any], where: str) -> Check:
        item = self.node(schema.get("items", True), f"{where}/items")
        min_items = int(schema.get("minItems", 0))
        unique = bool(schema.get("uniqueItems", False))

        def check(v: Any) -> bool:
            if type(v) is not list:
                return True  # array keywords do not constrain other types
            if len(v) < min_items:
                return False
            if unique and not (
                all(type(x) is str for x in v) and len(set(v)) == len(v)
            ):  # strings only: other items go to the reference validator
                return False
            return item is _accept or all(item(x) for x in v)

        return check


__all__ = ["Check", "UnsupportedSchema", "compile_check"]
