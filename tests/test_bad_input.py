"""Bad input never stops a run: a hypothesis property over whole JSONL files that mix good records
with every kind of bad line, ingested into a real PostgreSQL and then chunked.

For every generated file: ingest never raises; the stored records are exactly the good ones, the
newest line winning per key (ties: the later line); the quarantine holds exactly one row per bad
line, with a reason that names the problem; records stored before the file are kept unless a good
line supersedes them; re-running the file changes nothing; the chunker cuts every stored record
exactly as it would cut the record that was written. The example-based cases live in
tests/test_raw_records.py.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import re
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from semindex import chunks, raw_records
from semindex.chunking import ChunkingParameters, chunk_record_fields

FIELD_LIMIT = 2 * 1024 * 1024  # the default SEMINDEX_MAX_FIELD_BYTES
KEY_LIMIT = raw_records.MAX_KEY_BYTES
KEY_COLUMNS = raw_records.KEY_COLUMNS
BOM = b"\xef\xbb\xbf"
# Stands in for a raw byte sequence that json.dumps would escape; never produced by TEXT below.
PLACEHOLDER = "\ue000"
ABSENT = object()

# Any code point PostgreSQL text can hold: everything but NUL and the surrogates (control
# characters, other whitespace, combining marks and astral characters included).
TEXT = st.characters(exclude_categories=("Cs",), exclude_characters="\x00" + PLACEHOLDER)
JSON_NON_TEXT = st.sampled_from([0, 1, -7, 2.5, 1e300, True, False, None, [], ["a"], {}, {"a": "b"}])
TYPE_NAMES = r"(int|float|bool|NoneType|list|dict)"
INVALID_TIMESTAMPS = [
    "yesterday", "2024-13-01T00:00:00Z", "2024-02-30T00:00:00Z", "", "2024-01-01T24:00:01Z",
    "01/02/2024", "2024-01-01T00:00:00+25:00", "\uff11\uff19\uff19\uff19-01-01", "T12:00", "2024-1-1",
]
OFFSETS = [dt.timezone.utc, dt.timezone(dt.timedelta(hours=14)), dt.timezone(dt.timedelta(hours=-12)),
           dt.timezone(dt.timedelta(hours=5, minutes=30)), None]


def _key_text(pool: list[str]):
    """A key from a small pool (so keys repeat across lines) or a fresh one; never blank."""
    return st.one_of(st.sampled_from(pool), st.text(TEXT, max_size=8).map(lambda tail: "k" + tail))


@dataclass(frozen=True)
class Expected:
    connector_id: str
    connector_instance_id: str
    stream: str
    record_key: str
    fields: dict
    updated_at: dt.datetime
    deleted: bool

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.connector_instance_id, self.stream, self.record_key)

    @property
    def content(self) -> tuple:
        return (self.connector_id, json.dumps(self.fields, sort_keys=True), self.deleted)


@dataclass
class Line:
    raw: bytes  # without its line end
    good: Expected | None = None
    reason: str | None = None  # a regex the quarantine reason must match; None for a blank line
    kind: str = "good"

    def __repr__(self) -> str:
        # Lines of megabytes: a failing example must still print in a screenful.
        raw = self.raw if len(self.raw) <= 300 else self.raw[:150] + b"..." + self.raw[-100:]
        shown = raw if len(self.raw) <= 300 else f"{raw!r} ({len(self.raw)} bytes)"
        return f"Line({self.kind}: {shown!r}, good={self.good!r:.300}, reason={self.reason!r})"


@st.composite
def timestamps(draw) -> tuple[str, dt.datetime]:
    moment = draw(st.datetimes(min_value=dt.datetime(2, 1, 1), max_value=dt.datetime(9998, 12, 31)))
    zone = draw(st.sampled_from(OFFSETS))
    text = moment.replace(tzinfo=zone).isoformat()
    if zone is dt.timezone.utc and draw(st.booleans()):
        text = text.replace("+00:00", "Z")
    return text, moment.replace(tzinfo=zone or dt.timezone.utc)


@st.composite
def good_records(draw, stamps: list) -> tuple[dict, Expected]:
    """A valid record as a JSON object (keys in any order, maybe an unknown extra key) and what
    must be stored for it."""
    keys = {
        "connector_id": draw(_key_text(["gmail", "chat ☃"])),
        "connector_instance_id": draw(_key_text(["gmail-ann", "inst\u0007x", "ünï"])),
        "stream": draw(_key_text(["messages", "流"])),
        "record_key": draw(_key_text(["m-1", "m-2", "m\u2028-3"])),
    }
    fields = draw(st.dictionaries(st.text(TEXT, max_size=6), st.text(TEXT, max_size=60), max_size=3))
    stamp_text, stamp = draw(st.sampled_from(stamps))
    deleted = draw(st.sampled_from([ABSENT, False, True]))
    obj = dict(keys, updated_at=stamp_text)
    if deleted is not ABSENT:
        obj["deleted"] = deleted
    if deleted is not True or draw(st.booleans()):
        obj["fields"] = fields
    if draw(st.booleans()):
        obj["x-extra"] = draw(JSON_NON_TEXT)
    order = draw(st.permutations(list(obj)))
    obj = {name: obj[name] for name in order}
    expected = Expected(**keys, fields={} if deleted is True else fields, updated_at=stamp, deleted=deleted is True)
    return obj, expected


def _dumps(obj, *, ascii_only: bool) -> bytes:
    return json.dumps(obj, ensure_ascii=ascii_only).encode("utf-8")


def _with_raw(obj: dict, raw: bytes) -> bytes:
    """The object serialised with `raw` bytes where its PLACEHOLDER was: bytes json.dumps would
    have escaped (a control character, a NUL) or that are not UTF-8 at all."""
    return _dumps(obj, ascii_only=False).replace(PLACEHOLDER.encode("utf-8"), raw)


VALUE_SLOT = PLACEHOLDER * 2


def _with_raw_value(obj: dict, raw_json: bytes) -> bytes:
    """The object serialised with the JSON text `raw_json` as the value that was VALUE_SLOT."""
    return _dumps(obj, ascii_only=False).replace(json.dumps(VALUE_SLOT, ensure_ascii=False).encode("utf-8"), raw_json)


def _where(draw, obj: dict) -> tuple[str, str]:
    """A place in the record for a bad value: a key column, a field value or a field name.
    Returns (kind, the name the reason uses)."""
    place = draw(st.sampled_from([*KEY_COLUMNS, "field value", "field name"]))
    if place == "field value":
        return place, f"fields.{draw(st.sampled_from(['body', 'ä b']))}"
    return place, "a field name" if place == "field name" else place


def _put(obj: dict, place: str, where: str, value: str) -> None:
    if place in KEY_COLUMNS:
        obj[place] = value
    elif place == "field value":
        obj["fields"] = {**obj.get("fields", {}), where.removeprefix("fields."): value}
    else:
        obj["fields"] = {**obj.get("fields", {}), value: "text"}


BAD_KINDS = [
    "truncated", "garbage", "trailing data", "not an object", "missing key", "wrong type", "blank key",
    "wrong deleted", "wrong fields", "wrong field value", "wrong updated_at", "invalid timestamp",
    "NUL escaped", "NUL raw", "surrogate escaped", "surrogate raw", "invalid UTF-8", "raw control",
    "key too long", "deeply nested", "number too long", "unicode blank",
]


@st.composite
def bad_lines(draw, stamps: list, kind: str | None = None) -> Line:
    kind = kind or draw(st.sampled_from(BAD_KINDS))
    line = _bad_line(draw, kind, stamps)
    line.kind = kind
    return line


def _bad_line(draw, kind: str, stamps: list) -> Line:
    obj, _ = draw(good_records(stamps))
    obj.setdefault("fields", {})
    ascii_only = draw(st.booleans())
    if kind == "truncated":
        text = _dumps(obj, ascii_only=False).decode("utf-8")
        return Line(text[: draw(st.integers(1, len(text) - 1))].encode("utf-8"), reason=r"^invalid JSON: ")
    if kind == "garbage":
        raw = draw(st.sampled_from([b"not json", b"{'a': 1}", b"{,}", b"[1, 2", b"tru", b'{"a" 1}', b"}{"]))
        return Line(raw, reason=r"^invalid JSON: ")
    if kind == "trailing data":
        return Line(_dumps(obj, ascii_only=ascii_only) + b" x", reason=r"^invalid JSON: Extra data")
    if kind == "not an object":
        value = draw(st.sampled_from([[obj], 7, 2.5, "a record", None, True]))
        return Line(json.dumps(value).encode(), reason=r"^a record must be a JSON object, got (list|int|float|str|NoneType|bool)$")
    if kind == "missing key":
        name = draw(st.sampled_from([*KEY_COLUMNS, "updated_at", "fields"]))
        if name == "fields":
            obj.pop("deleted", None)  # a tombstone needs no fields
        del obj[name]
        return Line(_dumps(obj, ascii_only=ascii_only), reason=rf"^missing key '{name}'$")
    if kind == "wrong type":
        name = draw(st.sampled_from(KEY_COLUMNS))
        obj[name] = draw(JSON_NON_TEXT)
        return Line(_dumps(obj, ascii_only=ascii_only), reason=rf"^{name} must be text, got {TYPE_NAMES}$")
    if kind == "blank key":
        name = draw(st.sampled_from(KEY_COLUMNS))
        obj[name] = draw(st.sampled_from(["", " ", "\t", "\u3000", "\x1c", "\r\n"]))
        return Line(_dumps(obj, ascii_only=ascii_only), reason=rf"^{name} is empty$")
    if kind == "wrong deleted":
        obj["deleted"] = draw(st.sampled_from([None, 0, 1, "true", "false", [], {}]))
        return Line(_dumps(obj, ascii_only=ascii_only), reason=r"^deleted must be true or false, got ")
    if kind == "wrong fields":
        obj["fields"] = draw(st.sampled_from([[], ["a"], "text", 1, True, None]))
        return Line(_dumps(obj, ascii_only=ascii_only),
                    reason=r"^fields must be an object of text values, got (list|str|int|bool|NoneType)$")
    if kind == "wrong field value":
        name = draw(st.text(TEXT, max_size=6))
        obj["fields"] = {**obj["fields"], name: draw(JSON_NON_TEXT)}
        return Line(_dumps(obj, ascii_only=ascii_only), reason=rf"^fields\.{re.escape(name)} must be text, got {TYPE_NAMES}$")
    if kind == "wrong updated_at":
        obj["updated_at"] = draw(JSON_NON_TEXT)
        return Line(_dumps(obj, ascii_only=ascii_only), reason=rf"^updated_at must be an ISO 8601 string, got {TYPE_NAMES}$")
    if kind == "invalid timestamp":
        obj["updated_at"] = draw(st.sampled_from(INVALID_TIMESTAMPS))
        return Line(_dumps(obj, ascii_only=ascii_only), reason=r"^updated_at '.*' is not an ISO 8601 timestamp$")
    if kind in ("NUL escaped", "surrogate escaped"):
        place, where = _where(draw, obj)
        bad = "\x00" if kind == "NUL escaped" else draw(st.sampled_from(["\ud800", "\udfff", "a\udc80b"]))
        _put(obj, place, where, draw(st.text(TEXT, max_size=3)) + bad)
        problem = "contains a NUL byte" if kind == "NUL escaped" else r"is not valid Unicode \(lone surrogate\)"
        # json.dumps escapes both as \u0000 / \udXXX; unescaped, a lone surrogate is not even UTF-8.
        return Line(_dumps(obj, ascii_only=True), reason=rf"^{re.escape(where)} {problem}")
    if kind in ("NUL raw", "surrogate raw", "invalid UTF-8", "raw control"):
        place, where = _where(draw, obj)
        _put(obj, place, where, "v" + PLACEHOLDER)
        if kind == "NUL raw":
            return Line(_with_raw(obj, b"\x00"), reason=r"^invalid JSON: Invalid control character")
        if kind == "raw control":
            control = draw(st.sampled_from([chr(c) for c in range(1, 32) if c != 10]))
            return Line(_with_raw(obj, control.encode()), reason=r"^invalid JSON: Invalid control character")
        raw = b"\xed\xa0\x80" if kind == "surrogate raw" else draw(st.sampled_from([b"\xff", b"\xc3", b"\xf5\x80\x80\x80", b"\xe2\x82"]))
        return Line(_with_raw(obj, raw), reason=r"^not valid UTF-8 at byte \d+$")
    if kind == "key too long":
        place, where = draw(st.sampled_from([(name, name) for name in KEY_COLUMNS] + [("field name", "a field name")]))
        _put(obj, place, where, "r" * (KEY_LIMIT + draw(st.integers(1, 300))))
        return Line(_dumps(obj, ascii_only=ascii_only), reason=rf"^{where} is \d+ bytes, over the {KEY_LIMIT}-byte limit$")
    if kind == "deeply nested":
        depth = 100_000
        nested = ("[" * depth + "]" * depth).encode()
        raw = nested if draw(st.booleans()) else _with_raw_value(dict(obj, fields={"a": VALUE_SLOT}), nested)
        return Line(raw, reason=r"^JSON nested too deeply$")
    if kind == "number too long":
        digits = "1" + "0" * draw(st.integers(4300, 6000))
        return Line(_with_raw_value(dict(obj, record_key=VALUE_SLOT), digits.encode()), reason=r"^JSON number too long")
    assert kind == "unicode blank"
    return Line(draw(st.sampled_from(["\u3000", "\u00a0", "\u2028"])).encode("utf-8"), reason=r"^invalid JSON: ")


HUGE_KINDS = ["huge field", "huge key", "huge invalid JSON", "big good field", "big good record"]


def _big_text(draw, target_bytes: int) -> str:
    """About `target_bytes` of text built from a drawn word (drawing 10 MB directly would be slow)."""
    word = draw(st.text(TEXT, min_size=1, max_size=6)) + " "
    encoded = (word * (target_bytes // len(word.encode("utf-8")) + 1)).encode("utf-8")[:target_bytes]
    return encoded.decode("utf-8", errors="ignore")


@st.composite
def huge_lines(draw, stamps: list) -> Line:
    kind = draw(st.sampled_from(HUGE_KINDS))
    line = _huge_line(draw, kind, stamps)
    line.kind = kind
    return line


def _huge_line(draw, kind: str, stamps: list) -> Line:
    obj, expected = draw(good_records(stamps))
    if kind == "huge field":
        obj["fields"] = {"body": _big_text(draw, 10_000_000)}
        return Line(_dumps(obj, ascii_only=False), reason=rf"^fields\.body is \d+ bytes, over the {FIELD_LIMIT}-byte limit$")
    if kind == "huge key":
        obj["record_key"] = _big_text(draw, 10_000_000)
        return Line(_dumps(obj, ascii_only=False), reason=rf"^record_key is \d+ bytes, over the {KEY_LIMIT}-byte limit$")
    if kind == "huge invalid JSON":
        obj["fields"] = {"body": _big_text(draw, 10_000_000)}
        return Line(_dumps(obj, ascii_only=False)[:-2], reason=r"^invalid JSON: ")
    # Good: one field just under the limit, or a 10 MB record of five such fields.
    count = 1 if kind == "big good field" else 5
    fields = {f"part{i}": _big_text(draw, FIELD_LIMIT - 1000) for i in range(count)}
    obj["fields"] = fields
    obj.pop("deleted", None)
    expected = Expected(**{k: getattr(expected, k) for k in KEY_COLUMNS}, fields=fields,
                        updated_at=expected.updated_at, deleted=False)
    return Line(_dumps(obj, ascii_only=False), good=expected)


BLANKS = [b"", b"   ", b"\t", b"\r"]


@dataclass
class Case:
    before: list[Line]  # good records ingested from an earlier file
    lines: list[Line]
    line_ends: list[bytes]
    bom: bool
    bom_lines: set[int]  # indexes of later lines that also start with a BOM (concatenated exports)
    batch_size: int
    contents: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        parts = []
        for index, (line, end) in enumerate(zip(self.lines, self.line_ends, strict=True)):
            prefix = BOM if (index == 0 and self.bom) or index in self.bom_lines else b""
            parts.append(prefix + line.raw + end)
        self.contents = b"".join(parts)


@st.composite
def cases(draw) -> Case:
    stamps = draw(st.lists(timestamps(), min_size=1, max_size=3))
    before = [Line(_dumps(obj, ascii_only=True), good=expected)
              for obj, expected in draw(st.lists(good_records(stamps), max_size=4))]
    if draw(st.integers(0, 3)) == 0:
        # A file with one line of every bad kind, so each kind is met whatever else is drawn.
        plan = [*BAD_KINDS, *["good"] * draw(st.integers(1, 6)), *["blank"] * draw(st.integers(0, 2))]
        kinds = draw(st.permutations(plan))
    else:
        kinds = draw(st.lists(st.sampled_from(["good", "good", "bad", "bad", "blank"]), max_size=12))
    lines = []
    for kind in kinds:
        if kind == "good":
            obj, expected = draw(good_records(stamps))
            lines.append(Line(_dumps(obj, ascii_only=draw(st.booleans())), good=expected))
        elif kind == "bad" or kind in BAD_KINDS:
            lines.append(draw(bad_lines(stamps, None if kind == "bad" else kind)))
        else:
            lines.append(Line(draw(st.sampled_from(BLANKS)), kind="blank"))
    # At most one line of megabytes per file, in about one example out of three.
    if draw(st.integers(0, 2)) == 0:
        lines.insert(draw(st.integers(0, len(lines))), draw(huge_lines(stamps)))
    line_ends = [draw(st.sampled_from([b"\n", b"\r\n"])) for _ in lines]
    if line_ends and draw(st.booleans()):
        line_ends[-1] = b""  # no line end after the last line
    bom_lines = set(draw(st.sets(st.integers(1, max(1, len(lines) - 1)), max_size=2))) if len(lines) > 1 else set()
    return Case(before, lines, line_ends, draw(st.booleans()), bom_lines, draw(st.sampled_from([1, 2, 3, 5000])))


# -- the model ----------------------------------------------------------------------------------


def expected_store(ordered_good: list[Expected]) -> dict[tuple, Expected]:
    """Per key, the line with the newest updated_at; on a tie the later line."""
    store: dict[tuple, tuple[dt.datetime, int, Expected]] = {}
    for position, record in enumerate(ordered_good):
        current = store.get(record.key)
        if current is None or (record.updated_at, position) >= current[:2]:
            store[record.key] = (record.updated_at, position, record)
    return {key: winner for key, (_, _, winner) in store.items()}


def rerun_may_rewrite(good: list[Expected], batch_size: int, final: dict[tuple, Expected]) -> bool:
    """True when a re-run legitimately rewrites a row on the way: an earlier batch holds a
    different content for a key at the same updated_at as the final one (the later line won the
    tie the first time; re-read, the earlier batch wins it again until the later batch comes)."""
    for start in range(0, len(good), batch_size):
        for key, winner in expected_store(good[start : start + batch_size]).items():
            if winner.updated_at == final[key].updated_at and winner.content != final[key].content:
                return True
    return False


# -- the database ------------------------------------------------------------------------------


def _reset(db) -> None:
    with db.connection() as conn:
        conn.execute(
            "TRUNCATE semindex.raw_records, semindex.chunks, semindex.quarantined_records, "
            "semindex.ingested_files, semindex.retained_size_projection CASCADE"
        )


def _stored(db) -> dict[tuple, tuple]:
    with db.connection() as conn:
        return {
            (instance, stream, key): (connector_id, fields, updated_at, deleted, bytes(sha), changed_at)
            for connector_id, instance, stream, key, fields, updated_at, deleted, sha, changed_at in conn.execute(
                "SELECT connector_id, connector_instance_id, stream, record_key, fields, updated_at, deleted, "
                "content_sha256, changed_at FROM semindex.raw_records"
            )
        }


def _quarantine(db) -> dict[int, tuple[str, str]]:
    with db.connection() as conn:
        rows = conn.execute("SELECT line_no, reason, raw_excerpt FROM semindex.quarantined_records").fetchall()
    assert len(rows) == len({line_no for line_no, _, _ in rows})
    return {line_no: (reason, excerpt) for line_no, reason, excerpt in rows}


def _assert_store_matches(stored: dict, expected: dict[tuple, Expected]) -> None:
    assert set(stored) == set(expected)
    for key, record in expected.items():
        connector_id, fields, updated_at, deleted, _, _ = stored[key]
        assert (connector_id, fields, deleted) == (record.connector_id, record.fields, record.deleted), key
        assert updated_at == record.updated_at, key


_files = itertools.count()


@pytest.fixture
def clean_env(monkeypatch):
    monkeypatch.delenv("SEMINDEX_MAX_FIELD_BYTES", raising=False)


# psycopg_pool draws from the global `random` (reconnect jitter) in its own threads, which hypothesis
# can mistake for the strategy using it.
@pytest.mark.filterwarnings("ignore:Do not use the `random` module inside strategies")
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(case=cases())
def test_bad_lines_are_quarantined_good_ones_land_and_a_rerun_changes_nothing(db, tmp_path, clean_env, case):
    for line in case.lines:
        event(f"line: {line.kind}")
    if case.bom or case.bom_lines:
        event("file: BOM")
    _reset(db)
    number = next(_files)
    if case.before:
        before_path = tmp_path / f"before-{number}.jsonl"
        before_path.write_bytes(b"".join(line.raw + b"\n" for line in case.before))
        raw_records.ingest_file(db, before_path)
    stored_before = _stored(db)
    path = tmp_path / f"case-{number}.jsonl"
    path.write_bytes(case.contents)

    report = raw_records.ingest_file(db, path, batch_size=case.batch_size)  # never raises

    good = [line.good for line in case.lines if line.good is not None]
    bad = {line_no: line.reason for line_no, line in enumerate(case.lines, start=1) if line.reason is not None}
    expected = expected_store([line.good for line in case.before] + good)
    stored = _stored(db)
    _assert_store_matches(stored, expected)
    before_winners = expected_store([line.good for line in case.before])
    for key, winner in before_winners.items():
        if expected[key] is winner:  # nothing in the file supersedes it: the row is untouched
            assert stored[key] == stored_before[key], key
    quarantined = _quarantine(db)
    assert set(quarantined) == set(bad), "one quarantine row per bad line, none for good or blank lines"
    for line_no, pattern in bad.items():
        reason, excerpt = quarantined[line_no]
        assert re.search(pattern, reason), f"line {line_no}: reason {reason!r} does not match {pattern!r}"
        assert "\x00" not in excerpt and len(excerpt) <= raw_records.EXCERPT_CHARS
    assert report.quarantined == len(bad) and report.lines == len(good) + len(bad)
    assert report.inserted + report.updated + report.deleted + report.unchanged == len(good)

    # The same file again: skipped; forced, it rewrites nothing (bar tie re-runs, see above).
    assert raw_records.ingest_file(db, path).files_skipped_unchanged == 1
    again = raw_records.ingest_file(db, path, batch_size=case.batch_size, force=True)
    after = _stored(db)
    _assert_store_matches(after, expected)
    if not rerun_may_rewrite(good, case.batch_size, expected):
        assert (again.inserted, again.updated, again.deleted) == (0, 0, 0)
        assert after == stored
    assert _quarantine(db) == quarantined

    # The chunker takes whatever validation let through, and cuts exactly what was stored.
    chunks.sync_chunks(db, ChunkingParameters())
    with db.connection() as conn:
        cut: dict[tuple, set] = {}
        for instance, stream, key, field_name, chunk_no, content in conn.execute(
            "SELECT connector_instance_id, stream, record_key, field, chunk_no, content FROM semindex.chunks"
        ):
            cut.setdefault((instance, stream, key), set()).add((field_name, chunk_no, content))
        pending = conn.execute(
            "SELECT count(*) FROM semindex.raw_records WHERE chunked_sha256 IS DISTINCT FROM content_sha256"
        ).fetchone()[0]
    assert pending == 0
    wanted = {}
    for key, record in expected.items():
        if not record.deleted:
            pieces = {(c.field, c.chunk_no, c.content)
                      for c in chunk_record_fields(*key, record.fields, ChunkingParameters())}
            if pieces:
                wanted[key] = pieces
    assert cut == wanted


@pytest.mark.parametrize("same_file", [True, False], ids=["one file, batches of one", "three files"])
def test_an_older_copy_never_overwrites_a_record_seen_later_with_a_newer_time(db, tmp_path, same_file):
    """Newest wins across batches and files: a re-export with unchanged content and a newer
    updated_at still counts as the newest version, so an older copy arriving after it loses."""
    base = {"connector_id": "mail", "connector_instance_id": "mail-1", "stream": "inbox", "record_key": "m-1"}
    first = dict(base, fields={"body": "final text"}, updated_at="2024-01-01T00:00:00Z")
    re_export = dict(first, updated_at="2024-06-01T00:00:00Z")
    stale_copy = dict(base, fields={"body": "draft text"}, updated_at="2024-03-01T00:00:00Z")
    if same_file:
        path = tmp_path / "all.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in (first, re_export, stale_copy)))
        raw_records.ingest_file(db, path, batch_size=1)
    else:
        for number, record in enumerate((first, re_export, stale_copy)):
            path = tmp_path / f"{number}.jsonl"
            path.write_text(json.dumps(record) + "\n")
            report = raw_records.ingest_file(db, path)
            if record is re_export:  # an unchanged record: not rewritten as a change
                assert (report.inserted, report.updated, report.unchanged) == (0, 0, 1)
    with db.connection() as conn:
        fields, updated_at = conn.execute("SELECT fields, updated_at FROM semindex.raw_records").fetchone()
    assert fields == {"body": "final text"}
    assert updated_at == dt.datetime(2024, 6, 1, tzinfo=dt.timezone.utc)
