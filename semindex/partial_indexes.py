"""Stage 7, the partial-index set: partial HNSW indexes for hot sources and hot fields of one
embedding version.

Sources in the band (by default at least 5,000 vectors, at most 10% of the version's vectors, at
most 16 sources) get a filtered graph of their own: walking it beats scanning the source exactly
(at 1M rows, 10k rows of a source took 20 ms exactly). Fields in their band (at least 5,000 rows,
at most half the version, at most 4 fields) get one too: a small field's rows lie scattered over the
table, so its exact scan reads a page per row (17.6k quote rows: 69 ms), and a walk of the version's
graph filtered by a large field loses recall when the queries' neighbourhoods hold other fields
(0.938 for a 43% field of definitions under chat queries). A member that leaves its band loses its
index. Index names are derived from a hash of the member, and its values reach the DDL only as
quoted literals, so any connector id or field name, however odd, yields a safe name and predicate.

Without pgvector (JSONB mode) there are no partial graphs: the set is skipped and lists none.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from psycopg import sql

from semindex.database import Database
from semindex.errors import InvalidInput
from semindex.indexes import JSONB_SKIPPED, HnswParameters, concurrently_keyword, drop_index, ensure_index
from semindex.sql_files import statement
from semindex.stage_report import StageReport
from semindex.vectors.storage import storage_for
from semindex.vectors.version import EmbeddingVersion, get_version

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HotSourceBand:
    min_rows: int = 5_000
    max_share: float = 0.10
    max_sources: int = 16

    def __post_init__(self) -> None:
        _check_band(self.min_rows, self.max_share, "max_sources", self.max_sources)


@dataclass(frozen=True)
class HotFieldBand:
    min_rows: int = 5_000
    max_share: float = 0.5
    max_fields: int = 4

    def __post_init__(self) -> None:
        _check_band(self.min_rows, self.max_share, "max_fields", self.max_fields)


def _check_band(min_rows: int, max_share: float, most_name: str, most: int) -> None:
    if min_rows < 1:
        raise InvalidInput(f"min_rows={min_rows} must be at least 1")
    if not 0 < max_share <= 1:
        raise InvalidInput(f"max_share={max_share} must be in (0, 1]")
    if most < 0:
        raise InvalidInput(f"{most_name}={most} must not be negative")


@dataclass
class PartialIndexReport:
    members: list[dict] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    skipped: str | None = None  # why nothing was synced (JSONB mode), else None


@dataclass(frozen=True)
class _Member:
    """One wanted partial graph: its index, the DDL statement and literals of its predicate, and its
    row in the managed table."""

    index: str
    rows: int
    ddl: str  # the statement in sql/indexes.sql
    predicate: dict  # placeholder -> value, quoted as literals into the DDL
    record: tuple  # the managed row's values after the version id, before the index and rows


def _digest(*values: str) -> str:
    return hashlib.sha256(json.dumps(list(values)).encode("utf-8")).hexdigest()[:16]


def partial_index_name(version: EmbeddingVersion, connector_instance_id: str, stream: str) -> str:
    return f"{version.table_name}_hot_{_digest(connector_instance_id, stream)}"


def field_index_name(version: EmbeddingVersion, field_name: str) -> str:
    return f"{version.table_name}_hotfield_{_digest(field_name)}"


def sync_partial_indexes(
    db: Database, version: EmbeddingVersion, band: HotSourceBand, parameters: HnswParameters,
    field_band: HotFieldBand | None = None,
) -> PartialIndexReport:
    """Make the version's partial graphs those of the sources in `band` and the fields in
    `field_band` (the default band when None)."""
    field_band = HotFieldBand() if field_band is None else field_band
    report = PartialIndexReport()
    if not storage_for(db).ann_indexes:
        log.info("%s: no partial HNSW indexes in JSONB mode (no pgvector); hot sources are searched by brute force",
                 version.vectors_table)
        report.skipped = JSONB_SKIPPED
        return report
    schema, _, table = version.vectors_table.rpartition(".")
    with db.connection() as conn:
        sources = conn.execute(statement("partial_indexes", "band_members"), {
            "version_key": version.version_key, "min_rows": band.min_rows,
            "max_share": band.max_share, "max_sources": band.max_sources,
        }).fetchall()
        fields = conn.execute(statement("partial_indexes", "field_band_members"), {
            "version_key": version.version_key, "version_id": version.version_id, "schema": schema or "public", "table": table,
            "min_rows": field_band.min_rows, "max_share": field_band.max_share, "max_fields": field_band.max_fields,
        }).fetchall()
        managed_sources = [row[2] for row in conn.execute(statement("partial_indexes", "managed"), (version.version_id,))]
        managed_fields = [row[1] for row in conn.execute(statement("partial_indexes", "managed_fields"),
                                                         (version.version_id,))]
    _sync(db, version, parameters, report, "forget_member", "record_member", managed_sources, [
        _Member(partial_index_name(version, instance, stream), rows, "create_partial_hnsw",
                {"connector_instance_id": instance, "stream": stream}, (instance, stream))
        for instance, stream, rows in sources
    ], lambda member: {"connector_instance_id": member.record[0], "stream": member.record[1]})
    _sync(db, version, parameters, report, "forget_field_member", "record_field_member", managed_fields, [
        _Member(field_index_name(version, name), rows, "create_field_hnsw", {"field": name}, (name,))
        for name, rows in fields
    ], lambda member: {"field": member.record[0]})
    return report


def _sync(db: Database, version: EmbeddingVersion, parameters: HnswParameters, report: PartialIndexReport,
          forget: str, record: str, managed: list[str], wanted: list[_Member],
          describe: Callable[[_Member], dict]) -> None:
    wanted_names = {member.index for member in wanted}
    for index_name in managed:
        if index_name not in wanted_names:
            # Forget first: the planner must stop choosing the index before it disappears.
            with db.connection() as conn:
                conn.execute(statement("partial_indexes", forget), (index_name,))
            drop_index(db, index_name)
            report.dropped.append(index_name)
    for member in wanted:

        def create(concurrently: bool, member: _Member = member):
            return statement(
                "indexes", member.ddl, concurrently=concurrently_keyword(concurrently), index=member.index,
                vectors=version.vectors_table, opclass=version.metric.sql_opclass, m=parameters.m,
                ef_construction=parameters.ef_construction,
                **{name: sql.Literal(value) for name, value in member.predicate.items()},
            )

        build = ensure_index(
            db, member.index, create, concurrently=True, maintenance_work_mem=parameters.maintenance_work_mem
        )
        if build.action != "exists":
            report.created.append(member.index)
        with db.connection() as conn:
            conn.execute(statement("partial_indexes", record),
                         (version.version_id, *member.record, member.index, member.rows))
        report.members.append({**describe(member), "rows": member.rows, "index": member.index})


def managed_partial_indexes(db: Database, version: EmbeddingVersion) -> list[str]:
    """The version's partial graphs: its hot sources', then its hot fields'."""
    if not storage_for(db).ann_indexes:
        return []  # none can exist without pgvector
    with db.connection() as conn:
        sources = [row[2] for row in conn.execute(statement("partial_indexes", "managed"), (version.version_id,))]
        fields = [row[1] for row in conn.execute(statement("partial_indexes", "managed_fields"), (version.version_id,))]
    return sources + fields


def partial_index_stage(db: Database, version_key: str, band: HotSourceBand, parameters: HnswParameters,
                        field_band: HotFieldBand | None = None) -> StageReport:
    started = time.monotonic()
    version = get_version(db, version_key)
    report = sync_partial_indexes(db, version, band, parameters, field_band)
    if report.skipped:
        log.info("partial HNSW indexes of %s: %s", version.version_key, report.skipped)
    return StageReport(
        row_count=len(report.members),
        added=len(report.created),
        removed=len(report.dropped),
        seconds=time.monotonic() - started,
        work_rows=sum(member["rows"] for member in report.members if member["index"] in report.created),
        details={"members": report.members, "dropped": report.dropped,
                 **({"action": report.skipped} if report.skipped else {})},
    )
