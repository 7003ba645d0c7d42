"""Stage 1 on a real PostgreSQL: upsert by content hash, tombstones, quarantine."""

import json

from semindex import raw_records
from semindex.sql_files import statement
from tests.conftest import sample_records, write_jsonl


def _stored(db):
    with db.connection() as conn:
        return conn.execute(
            "SELECT record_key, fields, deleted, changed_at FROM semindex.raw_records ORDER BY record_key"
        ).fetchall()


def test_upsert_skips_unchanged_records_and_tombstones_deletions(db, tmp_path):
    records = sample_records(per_stream=3)
    first = raw_records.ingest_file(db, write_jsonl(tmp_path / "a.jsonl", records))
    assert (first.inserted, first.updated, first.deleted, first.quarantined) == (len(records), 0, 0, 0)
    before = {key: changed_at for key, _, _, changed_at in _stored(db)}

    # Same content with new timestamps: nothing is rewritten.
    touched = [dict(r, updated_at="2030-01-01T00:00:00Z") for r in records]
    second = raw_records.ingest_file(db, write_jsonl(tmp_path / "b.jsonl", touched))
    assert (second.inserted, second.updated, second.unchanged) == (0, 0, len(records))
    assert {key: changed_at for key, _, _, changed_at in _stored(db)} == before

    edited = dict(touched[0], fields={"text": "an edited message"}, updated_at="2030-01-02T00:00:00Z")
    gone = dict(touched[1], deleted=True, fields={}, updated_at="2030-01-02T00:00:00Z")
    third = raw_records.ingest_file(db, write_jsonl(tmp_path / "c.jsonl", [edited, gone]))
    assert (third.inserted, third.updated, third.deleted) == (0, 1, 1)
    stored = {key: (fields, deleted) for key, fields, deleted, _ in _stored(db)}
    assert stored[edited["record_key"]] == ({"text": "an edited message"}, False)
    assert stored[gone["record_key"]] == ({}, True)
    assert raw_records.live_record_count(db) == len(records) - 1


def test_an_unchanged_file_is_skipped_on_rerun(db, small_corpus):
    raw_records.ingest_file(db, small_corpus)
    again = raw_records.ingest_file(db, small_corpus)
    assert again.files_skipped_unchanged == 1 and again.lines == 0


def test_malformed_lines_are_quarantined_while_good_ones_land(db, tmp_path):
    good = sample_records(per_stream=2)
    base = dict(good[0], record_key="k")
    bad_lines = [
        "{not json",
        json.dumps([1, 2, 3]),
        json.dumps({k: v for k, v in base.items() if k != "record_key"}),
        json.dumps(dict(base, fields={"text": ["a", "list"]})),
        json.dumps(dict(base, fields={"text": "nul \u0000 byte"})),
        json.dumps(dict(base, updated_at="yesterday")),
        json.dumps(dict(base, deleted="yes")),
        json.dumps(dict(base, stream=7)),
        json.dumps(dict(base, fields={"text": "x" * 3_000_000})),
        json.dumps(dict(base, record_key="r" * 600)),
    ]
    path = tmp_path / "mixed.jsonl"
    with path.open("wb") as handle:
        for line in [json.dumps(good[0]), *bad_lines, json.dumps(good[1])]:
            handle.write(line.encode() + b"\n")
        handle.write(b'{"bad utf8": "\xff\xfe"}\n')
        for record in good[2:]:
            handle.write(json.dumps(record).encode() + b"\n")

    report = raw_records.ingest_file(db, path)

    assert report.inserted == len(good)
    assert report.quarantined == len(bad_lines) + 1
    with db.connection() as conn:
        rows = conn.execute(
            "SELECT line_no, reason FROM semindex.quarantined_records ORDER BY line_no"
        ).fetchall()
    reasons = dict(rows)
    assert sorted(reasons) == [*range(2, 2 + len(bad_lines)), 2 + len(bad_lines) + 1]
    assert reasons[2].startswith("invalid JSON")
    assert reasons[4] == "missing key 'record_key'"
    assert reasons[5] == "fields.text must be text, got list"
    assert "NUL byte" in reasons[6]
    assert "not an ISO 8601 timestamp" in reasons[7]
    assert "over the" in reasons[10] and "fields.text is 3000000 bytes" in reasons[10]
    assert "not valid UTF-8" in reasons[13]
    # Quarantine is idempotent per file content and line.
    raw_records.ingest_file(db, path, force=True)
    with db.connection() as conn:
        assert conn.execute(statement("raw_records", "quarantine_count")).fetchone()[0] == report.quarantined


def test_duplicate_keys_in_one_file_keep_the_newest(db, tmp_path):
    record = sample_records(per_stream=1)[0]
    older = dict(record, fields={"text": "older"}, updated_at="2020-01-01T00:00:00Z")
    newer = dict(record, fields={"text": "newer"}, updated_at="2021-01-01T00:00:00Z")
    report = raw_records.ingest_file(db, write_jsonl(tmp_path / "dup.jsonl", [newer, older]))
    assert report.quarantined == 0
    assert [fields for _, fields, _, _ in _stored(db)] == [{"text": "newer"}]
