"""The vector store's metadata filter language, compiled to SQL with every key and value bound.

    {"category": "science"}                  equality: the stored value is "science", or a stored
                                             list holds it (the seed's JSONB-containment semantics)
    {"tags": ["a", "b"]}                     a list is IN: any of its values matches (a stored list
                                             matches when the two lists share a value)
    {"year": {"$gte": 2020, "$lt": 2025}}    operators: $eq $ne $gt $gte $lt $lte $in $nin $exists
    {"$or": [{...}, {...}]}, {"$and": [...]}, {"$not": {...}}
    {"author.name": "Ann"}                   a dotted key reaches into nested objects
    {"meta": {"a": 1}}                       an object (no $ keys) is contained, as in the seed

Comparisons are typed: a number compares with stored numbers, a string with stored strings (byte
order), so {"$gt": 5} never matches "10". $ne and $nin match records without the key (they are
NOT $eq and NOT $in); $exists: true matches a key holding JSON null. Equality and IN compile to
JSONB containment (`@>`), which the store's GIN index on the metadata column serves.

Anything else is an InvalidFilter naming the part at fault: an unknown operator, an operator beside
plain keys, a range on a boolean, an empty key, a non-list for $in.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from psycopg import sql
from psycopg.types.json import Jsonb

from semindex.errors import InvalidInput

OPERATORS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists")
LOGICAL = ("$and", "$or", "$not")
_RANGE_SQL = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}


class InvalidFilter(InvalidInput):
    """A filter the language does not allow; the message names the part at fault."""


@dataclass
class CompiledFilter:
    """A WHERE condition over the metadata column and its bound values."""

    condition: sql.Composable
    params: dict = field(default_factory=dict)


class _Compiler:
    def __init__(self, column: sql.Composable) -> None:
        self.column = column
        self.params: dict = {}

    def bind(self, value) -> sql.Placeholder:
        name = f"f{len(self.params)}"
        self.params[name] = value
        return sql.Placeholder(name)

    def compile(self, spec, where: str = "filter") -> sql.Composable:
        if not isinstance(spec, Mapping):
            raise InvalidFilter(f"{where} must be an object of keys and conditions, got {spec!r}")
        parts = [self._entry(key, value, where) for key, value in spec.items()]
        return _joined(parts, "AND")

    def _entry(self, key, value, where: str) -> sql.Composable:
        if not isinstance(key, str) or not key:
            raise InvalidFilter(f"{where}: a key must be non-empty text, got {key!r}")
        if key in ("$and", "$or"):
            if not isinstance(value, list) or not value:
                raise InvalidFilter(f"{where}.{key} must be a non-empty list of filters, got {value!r}")
            return _joined([self.compile(item, f"{where}.{key}[{n}]") for n, item in enumerate(value)], key[1:].upper())
        if key == "$not":
            return sql.SQL("NOT coalesce({}, false)").format(self.compile(value, f"{where}.$not"))
        if key.startswith("$"):
            raise InvalidFilter(f"{where}: unknown operator {key!r} (logical: {', '.join(LOGICAL)}; on a key: {', '.join(OPERATORS)})")
        path = key.split(".")
        if any(not part for part in path):
            raise InvalidFilter(f"{where}: key {key!r} has an empty part")
        if isinstance(value, Mapping) and any(isinstance(k, str) and k.startswith("$") for k in value):
            if not all(isinstance(k, str) and k.startswith("$") for k in value):
                raise InvalidFilter(f"{where}.{key}: operators and plain keys are mixed in {value!r}")
            return _joined([self._operator(path, op, operand, f"{where}.{key}") for op, operand in value.items()], "AND")
        return self._equals(path, value, f"{where}.{key}")

    def _equals(self, path: list[str], value, where: str) -> sql.Composable:
        if isinstance(value, list):
            if not value:
                return sql.SQL("false")
            return _joined([self._equals(path, item, where) for item in value], "OR")
        _check_value(value, where)
        # The value itself, or a stored list holding it: both served by the GIN index.
        return sql.SQL("({column} @> {alone}::jsonb OR {column} @> {listed}::jsonb)").format(
            column=self.column, alone=self.bind(Jsonb(_nested(path, value))), listed=self.bind(Jsonb(_nested(path, [value]))))

    def _operator(self, path: list[str], op: str, operand, where: str) -> sql.Composable:
        if op == "$eq":
            return self._equals(path, operand, where)
        if op == "$ne":
            return sql.SQL("NOT coalesce({}, false)").format(self._equals(path, operand, where))
        if op in ("$in", "$nin"):
            if not isinstance(operand, list):
                raise InvalidFilter(f"{where}.{op} must be a list, got {operand!r}")
            matched = self._equals(path, operand, where)
            return matched if op == "$in" else sql.SQL("NOT coalesce({}, false)").format(matched)
        if op == "$exists":
            if not isinstance(operand, bool):
                raise InvalidFilter(f"{where}.$exists must be true or false, got {operand!r}")
            return sql.SQL("{} #> {}::text[] IS {}NULL").format(self.column, self.bind(path), sql.SQL("NOT " if operand else ""))
        if op in _RANGE_SQL:
            value = self.column_value(path)
            if isinstance(operand, bool) or not isinstance(operand, (int, float, str)):
                raise InvalidFilter(f"{where}.{op} compares numbers or strings, got {operand!r}")
            _check_value(operand, where)
            # CASE, not AND: PostgreSQL may evaluate the cast before the type test.
            if isinstance(operand, str):
                return sql.SQL("CASE WHEN jsonb_typeof({value}) = 'string' THEN ({value} #>> '{{}}') COLLATE \"C\" {op} {operand}::text "
                               "ELSE false END").format(value=value, op=sql.SQL(_RANGE_SQL[op]), operand=self.bind(operand))
            return sql.SQL("CASE WHEN jsonb_typeof({value}) = 'number' THEN ({value} #>> '{{}}')::numeric {op} {operand}::numeric "
                           "ELSE false END").format(value=value, op=sql.SQL(_RANGE_SQL[op]), operand=self.bind(repr(operand)))
        raise InvalidFilter(f"{where}: unknown operator {op!r} (known: {', '.join(OPERATORS)})")

    def column_value(self, path: list[str]) -> sql.Composable:
        return sql.SQL("({} #> {}::text[])").format(self.column, self.bind(path))


def compile_filter(spec: Mapping | None, column: sql.Composable) -> CompiledFilter:
    """`spec` as a condition on `column` (a jsonb column); no filter is TRUE."""
    if spec is None:
        return CompiledFilter(sql.SQL("true"))
    compiler = _Compiler(column)
    return CompiledFilter(compiler.compile(spec), compiler.params)


def _nested(path: list[str], value) -> dict:
    for part in reversed(path):
        value = {part: value}
    return value


def _check_value(value, where: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidFilter(f"{where}: {value!r} is not a finite number")
    if not isinstance(value, (str, int, float, bool, dict, list)) and value is not None:
        raise InvalidFilter(f"{where}: {value!r} ({type(value).__name__}) is not a JSON value")


def _joined(parts: list[sql.Composable], joiner: str) -> sql.Composable:
    if not parts:
        return sql.SQL("true")
    if len(parts) == 1:
        return parts[0]
    return sql.SQL("(") + sql.SQL(f" {joiner} ").join(parts) + sql.SQL(")")
