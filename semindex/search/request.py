"""What a search asks for: the scope, the request, and the one parser that builds a request from a
mapping of names to values (the CLI's arguments, an HTTP query string or a JSON body alike).

Every bad value is refused with InvalidInput naming the parameter and the value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime

from semindex.errors import InvalidInput
from semindex.search.fusion import FUSERS

MAX_K = 100
DEFAULT_K = 25
LEXICAL_WINDOW_RANGE = (100, 10_000)
UNITS = ("records", "chunks")


# Joins a stream and a field in the (stream, field) pairs of a per-stream field rule (sql/schema.sql,
# semindex.field_granted): a character no connector puts in a stream or field name.
PAIR_SEPARATOR = "\x1f"
FILTER_OPS = ("eq", "gt", "gte", "lt", "lte")


@dataclass(frozen=True)
class Scope:
    """What a search may see; every path applies it in the database, before any matching. Empty
    means no restriction. The last two come from an access grant (semindex.access): fields per
    stream (a listed stream is seen only in its listed fields) and a half-open range on the record's
    updated_at."""

    connector_instance_ids: tuple[str, ...] = ()
    streams: tuple[str, ...] = ()
    fields: tuple[str, ...] = ()
    record_keys: tuple[str, ...] = ()
    stream_fields: tuple[tuple[str, tuple[str, ...]], ...] = ()
    updated_since: datetime | None = None
    updated_until: datetime | None = None
    # (field, op, value) on the record's own fields; op one of FILTER_OPS (sql/schema.sql,
    # semindex.value_matches: numbers compare as numbers, other values as text).
    record_filters: tuple[tuple[str, str, str], ...] = ()

    @property
    def unrestricted(self) -> bool:
        return not (self.connector_instance_ids or self.streams or self.fields or self.record_keys
                    or self.stream_fields or self.updated_since or self.updated_until or self.record_filters)

    def sql_params(self) -> dict:
        """The bind parameters every scoped search statement takes (sql/search.sql)."""
        return {
            "fields": list(self.fields), "record_keys": list(self.record_keys),
            "rule_streams": [stream for stream, _ in self.stream_fields],
            "rule_pairs": [f"{stream}{PAIR_SEPARATOR}{name}" for stream, names in self.stream_fields for name in names],
            "since": self.updated_since, "until": self.updated_until,
            "filter_fields": [name for name, _, _ in self.record_filters],
            "filter_ops": [op for _, op, _ in self.record_filters],
            "filter_values": [value for _, _, value in self.record_filters],
        }

    @property
    def names_sources(self) -> bool:
        """True when the scope names connector instances or streams (a per-source plan)."""
        return bool(self.connector_instance_ids or self.streams)


@dataclass(frozen=True)
class SearchRequest:
    query: str
    mode: str = "hybrid"
    k: int = DEFAULT_K
    scope: Scope = Scope()
    version_key: str | None = None
    # Lexical candidates a search ranks in all: every match while they fit (semindex.search.lexical).
    lexical_window: int = 1000
    # Hybrid fusion; None: the version's own (its declared `fusion`, else semindex's default).
    fusion: str | None = None
    lexical_weight: float | None = None
    semantic_weight: float | None = None
    # A hit is a record (its best chunk gives the snippet and the score), or with "chunks" a passage.
    unit: str = "records"

    def validated(self) -> SearchRequest:
        """The request checked, with its query text made storable: NUL characters (which PostgreSQL
        text cannot hold) read as spaces, lone surrogates (not UTF-8) as U+FFFD."""
        if not isinstance(self.query, str) or not self.query.strip():
            raise InvalidInput(f"the query is empty (got {self.query!r})")
        cleaned = self.query.replace("\x00", " ").encode("utf-8", "surrogatepass").decode("utf-8", "replace")
        if cleaned != self.query:
            return replace(self, query=cleaned).validated()
        if not isinstance(self.mode, str) or not self.mode:
            raise InvalidInput(f"mode {self.mode!r} is not a search mode name")
        if isinstance(self.k, bool) or not isinstance(self.k, int):
            raise InvalidInput(f"k={self.k!r} is not a whole number")
        if not 1 <= self.k <= MAX_K:
            raise InvalidInput(f"k={self.k} must be between 1 and {MAX_K}")
        low, high = LEXICAL_WINDOW_RANGE
        if isinstance(self.lexical_window, bool) or not isinstance(self.lexical_window, int):
            raise InvalidInput(f"lexical window {self.lexical_window!r} is not a whole number")
        if not low <= self.lexical_window <= high:
            raise InvalidInput(f"lexical window {self.lexical_window} must be between {low} and {high}")
        if self.fusion is not None and self.fusion not in FUSERS:
            raise InvalidInput(f"fusion {self.fusion!r} is not one of {', '.join(FUSERS)}")
        if self.unit not in UNITS:
            raise InvalidInput(f"unit {self.unit!r} is not one of {', '.join(UNITS)}")
        for name in ("lexical_weight", "semantic_weight"):
            weight = getattr(self, name)
            if weight is not None and (isinstance(weight, bool) or not isinstance(weight, (int, float))
                                       or not 0 <= weight < float("inf")):
                raise InvalidInput(f"{name}={weight!r} must be a finite number of at least 0")
        for name, values in (("connector_instance_id", self.scope.connector_instance_ids), ("stream", self.scope.streams),
                             ("field", self.scope.fields), ("record_key", self.scope.record_keys)):
            bad = [value for value in values if not isinstance(value, str) or not value]
            if bad:
                raise InvalidInput(f"{name} values must be non-empty text, got {bad[0]!r}")
        for rule in self.scope.record_filters:
            if len(rule) != 3 or not all(isinstance(part, str) for part in rule) or not rule[0] or rule[1] not in FILTER_OPS:
                raise InvalidInput(f"record filter {rule!r} must be (field, one of {', '.join(FILTER_OPS)}, value)", param="filter")
        return self


# Names parse_request accepts, each with its aliases (a list parameter by its singular and plural).
_SCOPE_KEYS = {
    "connector_instance_ids": ("connector_instance_id", "connector_instance_ids"),
    "streams": ("stream", "streams"),
    "fields": ("field", "fields"),
    "record_keys": ("record_key", "record_keys"),
}
_SCALAR_KEYS = {
    "query": ("query", "q"),
    "mode": ("mode",),
    "k": ("k",),
    "version_key": ("version_key", "version"),
    "lexical_window": ("lexical_window",),
    "fusion": ("fusion",),
    "lexical_weight": ("lexical_weight",),
    "semantic_weight": ("semantic_weight",),
    "unit": ("unit",),
}
_CONVERTERS = {"k": int, "lexical_window": int, "lexical_weight": float, "semantic_weight": float}


def parse_request(values: Mapping[str, object]) -> SearchRequest:
    """A validated SearchRequest from names and values: text as an HTTP query string gives it, or
    typed values. List parameters take one text or a list of texts. Unknown names are refused."""
    aliases = {alias: name for name, names in (_SCALAR_KEYS | _SCOPE_KEYS).items() for alias in names}
    unknown = sorted(str(key) for key in values if key not in aliases)
    if unknown:
        raise InvalidInput(f"unknown search parameter(s) {', '.join(map(repr, unknown))}; known: {', '.join(sorted(aliases))}")
    given: dict[str, object] = {}
    for key, value in values.items():
        name = aliases[key]
        if name in given:
            raise InvalidInput(f"search parameter {name!r} is given twice (as {key!r} too)")
        given[name] = value
    scalars = {}
    for name in _SCALAR_KEYS:
        if name not in given or given[name] is None:
            continue
        value = given[name]
        convert = _CONVERTERS.get(name)
        if convert is not None and isinstance(value, str):
            try:
                value = convert(value.strip())
            except ValueError:
                raise InvalidInput(f"{name}={value!r} is not a {'whole number' if convert is int else 'number'}") from None
        elif convert is None and not isinstance(value, str):
            raise InvalidInput(f"{name}={value!r} must be text")
        scalars[name] = value
    if "query" not in scalars:
        raise InvalidInput("the query is missing (parameter 'query' or 'q')")
    scope = {}
    for name in _SCOPE_KEYS:
        value = given.get(name)
        if value is None:
            value = ()
        elif isinstance(value, str):
            value = (value,)
        elif isinstance(value, (list, tuple)):
            value = tuple(value)
        else:
            raise InvalidInput(f"{name}={value!r} must be text or a list of texts")
        scope[name] = value
    return SearchRequest(scope=Scope(**scope), **scalars).validated()

