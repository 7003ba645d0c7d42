"""Stage 1, raw records: parse JSONL, quarantine bad lines, upsert good records by content hash.

A line is one record: connector_id, connector_instance_id, stream, record_key, fields (an object of
text values), updated_at (ISO 8601) and an optional boolean `deleted`. Records are upserted on
(connector_instance_id, stream, record_key); a record whose content hash is unchanged is not
rewritten, a deleted record becomes a tombstone. A malformed line goes to
semindex.quarantined_records with its file, line number and reason; the run never stops on one.
A UTF-8 byte order mark at the start of a line is ignored (RFC 8259 lets a parser ignore it; files
saved on Windows start with one, and concatenated exports carry one mid-file); a line that is
blank once it is gone is skipped like any blank line.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path

from psycopg.types.json import Jsonb

import time

from semindex import row_counts, settings
from semindex.data import SAMPLE_CORPUS_PATH
from semindex.database import Database
from semindex.errors import InvalidInput, NotFound
from semindex.progress import ProgressReporter
from semindex.sql_files import statement
from semindex.stage_report import StageReport

log = logging.getLogger(__name__)

KEY_COLUMNS = ("connector_id", "connector_instance_id", "stream", "record_key")
# btree index entries top out near 2.7 kB; longer keys would fail a whole batch, so they are refused.
MAX_KEY_BYTES = 512
EXCERPT_CHARS = 2000
UTF8_BOM = b"\xef\xbb\xbf"


class MalformedRecord(InvalidInput):
    """A raw line that cannot become a record; the message is the quarantine reason."""


@dataclass(frozen=True)
class RawRecord:
    connector_id: str
    connector_instance_id: str
    stream: str
    record_key: str
    fields: dict[str, str]
    updated_at: dt.datetime
    deleted: bool

    @property
    def content_sha256(self) -> bytes:
        # updated_at is left out on purpose: a re-export with a new timestamp is not a change.
        canonical = json.dumps(
            [self.connector_id, self.fields, self.deleted], ensure_ascii=False, sort_keys=True
        )
        return hashlib.sha256(canonical.encode("utf-8")).digest()


@dataclass
class IngestReport:
    files: int = 0
    files_skipped_unchanged: int = 0
    lines: int = 0
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0
    quarantined: int = 0
    quarantine_reasons: dict[str, int] = field(default_factory=dict)

    def add(self, other: IngestReport) -> None:
        for counter in fields(self):
            if counter.type == "int":
                setattr(self, counter.name, getattr(self, counter.name) + getattr(other, counter.name))
        for reason, count in other.quarantine_reasons.items():
            self.quarantine_reasons[reason] = self.quarantine_reasons.get(reason, 0) + count


def _text(value: object, where: str, *, max_bytes: int) -> str:
    if not isinstance(value, str):
        raise MalformedRecord(f"{where} must be text, got {type(value).__name__}")
    if "\x00" in value:
        raise MalformedRecord(f"{where} contains a NUL byte, which PostgreSQL text cannot store")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise MalformedRecord(f"{where} is not valid Unicode (lone surrogate)") from None
    if size > max_bytes:
        raise MalformedRecord(f"{where} is {size} bytes, over the {max_bytes}-byte limit")
    return value


def parse_record(line: str, *, max_field_bytes: int) -> RawRecord:
    """One JSONL line as a RawRecord, or MalformedRecord with the reason."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as error:
        raise MalformedRecord(f"invalid JSON: {error.msg} at column {error.colno}") from None
    except ValueError as error:
        # Valid JSON Python refuses to read: an integer over sys.get_int_max_str_digits() digits.
        raise MalformedRecord(f"JSON number too long to read: {str(error).split(';')[0]}") from None
    if not isinstance(obj, dict):
        raise MalformedRecord(f"a record must be a JSON object, got {type(obj).__name__}")
    keys: dict[str, str] = {}
    for name in KEY_COLUMNS:
        if name not in obj:
            raise MalformedRecord(f"missing key {name!r}")
        value = _text(obj[name], name, max_bytes=MAX_KEY_BYTES)
        if not value.strip():
            raise MalformedRecord(f"{name} is empty")
        keys[name] = value
    deleted = obj.get("deleted", False)
    if not isinstance(deleted, bool):
        raise MalformedRecord(f"deleted must be true or false, got {deleted!r:.40}")
    if "fields" not in obj and not deleted:
        raise MalformedRecord("missing key 'fields'")
    raw_fields = obj.get("fields", {})  # a tombstone needs none; a null is a wrong type, not a missing key
    if not isinstance(raw_fields, dict):
        raise MalformedRecord(f"fields must be an object of text values, got {type(raw_fields).__name__}")
    fields = {
        _text(name, "a field name", max_bytes=MAX_KEY_BYTES): _text(value, f"fields.{name}", max_bytes=max_field_bytes)
        for name, value in raw_fields.items()
    }
    if "updated_at" not in obj:
        raise MalformedRecord("missing key 'updated_at'")
    raw_updated = obj["updated_at"]
    if not isinstance(raw_updated, str):
        raise MalformedRecord(f"updated_at must be an ISO 8601 string, got {type(raw_updated).__name__}")
    try:
        updated_at = dt.datetime.fromisoformat(raw_updated.replace("Z", "+00:00"))
    except ValueError:
        raise MalformedRecord(f"updated_at {raw_updated!r:.60} is not an ISO 8601 timestamp") from None
    if updated_at.tzinfo is None:
        updated_at = updated_at.replace(tzinfo=dt.timezone.utc)
    return RawRecord(
        fields={} if deleted else fields,
        updated_at=updated_at,
        deleted=deleted,
        **keys,
    )


@dataclass(frozen=True)
class Quarantined:
    line_no: int
    reason: str
    excerpt: str


def _excerpt(raw: bytes) -> str:
    text = raw[: EXCERPT_CHARS * 4].decode("utf-8", errors="backslashreplace")
    return text[:EXCERPT_CHARS].replace("\x00", "\\u0000")


def read_jsonl(path: Path, *, max_field_bytes: int) -> Iterator[tuple[int, int, RawRecord | Quarantined]]:
    """(line number, bytes read, record or quarantine entry) for every line, streamed."""
    with path.open("rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            size = len(raw)
            raw = raw.removeprefix(UTF8_BOM)
            if not raw.strip():
                yield line_no, size, None
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                at = error.start + size - len(raw)  # counted from the start of the line, BOM included
                yield line_no, size, Quarantined(line_no, f"not valid UTF-8 at byte {at}", _excerpt(raw))
                continue
            try:
                item: RawRecord | Quarantined = parse_record(line, max_field_bytes=max_field_bytes)
            except MalformedRecord as error:
                item = Quarantined(line_no, str(error), _excerpt(raw))
            except RecursionError:
                item = Quarantined(line_no, "JSON nested too deeply", _excerpt(raw))
            yield line_no, size, item


def file_sha256(path: Path) -> bytes:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.digest()


def _reason_family(reason: str) -> str:
    """Quarantine reasons grouped for counts: the text before the first detail."""
    return reason.split(":")[0].split(" is ")[0][:60]


def upsert_records(db: Database, records: list[tuple[int, RawRecord]]) -> IngestReport:
    """Upsert one batch set-based: COPY into a staging table, then one INSERT .. ON CONFLICT."""
    report = IngestReport()
    if not records:
        return report
    with db.connection() as conn:
        conn.execute(statement("raw_records", "create_staging"))
        with conn.cursor().copy(statement("raw_records", "copy_staging")) as copy:
            for line_no, record in records:
                copy.write_row(
                    (
                        line_no,
                        record.connector_id,
                        record.connector_instance_id,
                        record.stream,
                        record.record_key,
                        Jsonb(record.fields),
                        record.updated_at,
                        record.deleted,
                        record.content_sha256,
                    )
                )
        counts = conn.execute(statement("raw_records", "upsert_from_staging")).fetchone()
    inserted, updated, deleted = counts
    report.inserted, report.updated, report.deleted = inserted, updated, deleted
    report.unchanged = len(records) - inserted - updated - deleted
    return report


def quarantine(db: Database, source_file: str, source_sha256: bytes, entries: list[Quarantined]) -> None:
    if not entries:
        return
    with db.connection() as conn, conn.cursor() as cur:
        cur.executemany(
            statement("raw_records", "insert_quarantine"),
            [(source_file, source_sha256, entry.line_no, entry.reason, entry.excerpt) for entry in entries],
        )


def ingest_file(
    db: Database,
    path: Path,
    *,
    batch_size: int = 5000,
    max_field_bytes: int | None = None,
    force: bool = False,
    progress_emit=None,
) -> IngestReport:
    """Ingest one JSONL file. A file already ingested with the same content is skipped unless `force`."""
    path = Path(path)
    if not path.is_file():
        raise NotFound(f"no JSONL file at {path}")
    max_field_bytes = max_field_bytes or settings.max_field_bytes()
    source_sha256 = file_sha256(path)
    report = IngestReport(files=1)
    with db.connection() as conn:
        seen = conn.execute(statement("raw_records", "file_already_ingested"), (source_sha256,)).fetchone()
    if seen and not force:
        report.files_skipped_unchanged = 1
        return report

    progress = ProgressReporter(f"ingest {path.name}", path.stat().st_size, progress_emit, unit="bytes")
    batch: list[tuple[int, RawRecord]] = []
    bad: list[Quarantined] = []
    for line_no, line_bytes, item in read_jsonl(path, max_field_bytes=max_field_bytes):
        progress.advance(line_bytes)
        if item is None:
            continue
        report.lines += 1
        if isinstance(item, Quarantined):
            bad.append(item)
            family = _reason_family(item.reason)
            report.quarantine_reasons[family] = report.quarantine_reasons.get(family, 0) + 1
        else:
            batch.append((line_no, item))
        if len(batch) >= batch_size:
            report.add(upsert_records(db, batch))
            batch = []
        if len(bad) >= batch_size:
            quarantine(db, str(path), source_sha256, bad)
            report.quarantined += len(bad)
            bad = []
    report.add(upsert_records(db, batch))
    quarantine(db, str(path), source_sha256, bad)
    report.quarantined += len(bad)
    with db.connection() as conn:
        conn.execute(statement("raw_records", "mark_file_ingested"), (source_sha256, str(path), report.lines))
    progress.finish()
    return report


def ingest_files(db: Database, paths: Iterable[Path], **options) -> IngestReport:
    total = IngestReport()
    for path in paths:
        file_report = ingest_file(db, path, **options)
        log.info("ingested %s: %s", path, file_report)
        total.add(file_report)
    return total


def live_record_count(db: Database) -> int:
    """Live (not deleted) records, from the counts the writes keep: no scan, however large the table."""
    return row_counts.relation_rows(db, row_counts.RAW_RECORDS)


def default_sources() -> list[Path]:
    """What a run ingests when it is given no files: the bundled sample corpus, the judged sets' own
    documents (the evaluation searches them) and every *.jsonl in the inbox."""
    from semindex.judged_sets import judged_document_paths

    bundled = [SAMPLE_CORPUS_PATH, *(path for path in judged_document_paths() if path != SAMPLE_CORPUS_PATH)]
    inbox = settings.inbox()
    return [*bundled, *sorted(inbox.glob("*.jsonl"))] if inbox.is_dir() else bundled


def raw_records_stage(db: Database, paths: Iterable[Path] = (), *, force: bool = False, progress_emit=None) -> StageReport:
    """Ingest `paths` (none given: default_sources()) and report the stage."""
    paths = [Path(path) for path in paths] or default_sources()
    started = time.monotonic()
    report = ingest_files(db, paths, force=force, progress_emit=progress_emit)
    if report.quarantined:
        log.warning("%d lines quarantined: %s", report.quarantined, report.quarantine_reasons)
    return StageReport(
        row_count=live_record_count(db),
        added=report.inserted,
        changed=report.updated,
        removed=report.deleted,
        seconds=time.monotonic() - started,
        work_rows=report.lines,
        details={
            "unchanged": report.unchanged,
            "quarantined": report.quarantined,
            "quarantine_reasons": report.quarantine_reasons,
            "files": [str(path) for path in paths],
            "files_skipped_unchanged": report.files_skipped_unchanged,
        },
    )
