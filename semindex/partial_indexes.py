"""Stage 7, the partial-index set: partial HNSW indexes for hot sources of one embedding version.

Sources in the medium-large band (by default at least 10,000 vectors, at most 10% of the version's
vectors, at most 8 sources) get a filtered graph of their own; a source that leaves the band loses
it. Index names are derived from a hash of the source, and the source's values reach the DDL only
as quoted literals, so any connector id, however odd, yields a safe name and predicate.

Without pgvector (JSONB mode) there are no partial graphs: the set is skipped and lists none.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
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
    min_rows: int = 10_000
    max_share: float = 0.10
    max_sources: int = 8

    def __post_init__(self) -> None:
        if self.min_rows < 1:
            raise InvalidInput(f"min_rows={self.min_rows} must be at least 1")
        if not 0 < self.max_share <= 1:
            raise InvalidInput(f"max_share={self.max_share} must be in (0, 1]")
        if self.max_sources < 0:
            raise InvalidInput(f"max_sources={self.max_sources} must not be negative")


@dataclass
class PartialIndexReport:
    members: list[dict] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    skipped: str | None = None  # why nothing was synced (JSONB mode), else None


def partial_index_name(version: EmbeddingVersion, connector_instance_id: str, stream: str) -> str:
    digest = hashlib.sha256(json.dumps([connector_instance_id, stream]).encode("utf-8")).hexdigest()[:16]
    return f"{version.table_name}_hot_{digest}"


def sync_partial_indexes(
    db: Database, version: EmbeddingVersion, band: HotSourceBand, parameters: HnswParameters
) -> PartialIndexReport:
    report = PartialIndexReport()
    if not storage_for(db).ann_indexes:
        log.info("%s: no partial HNSW indexes in JSONB mode (no pgvector); hot sources are searched by brute force",
                 version.vectors_table)
        report.skipped = JSONB_SKIPPED
        return report
    with db.connection() as conn:
        desired = conn.execute(
            statement("partial_indexes", "band_members"),
            {
                "version_key": version.version_key,
                "min_rows": band.min_rows,
                "max_share": band.max_share,
                "max_sources": band.max_sources,
            },
        ).fetchall()
        managed = conn.execute(statement("partial_indexes", "managed"), (version.version_id,)).fetchall()
    wanted = {partial_index_name(version, instance, stream): (instance, stream, rows) for instance, stream, rows in desired}
    for instance, stream, index_name, _ in managed:
        if index_name not in wanted:
            # Forget first: the planner must stop choosing the index before it disappears.
            with db.connection() as conn:
                conn.execute(statement("partial_indexes", "forget_member"), (index_name,))
            drop_index(db, index_name)
            report.dropped.append(index_name)
    for index_name, (instance, stream, rows) in wanted.items():

        def create(concurrently: bool, instance: str = instance, stream: str = stream, index_name: str = index_name):
            return statement(
                "indexes",
                "create_partial_hnsw",
                concurrently=concurrently_keyword(concurrently),
                index=index_name,
                vectors=version.vectors_table,
                opclass=version.metric.sql_opclass,
                m=parameters.m,
                ef_construction=parameters.ef_construction,
                connector_instance_id=sql.Literal(instance),
                stream=sql.Literal(stream),
            )

        build = ensure_index(
            db, index_name, create, concurrently=True, maintenance_work_mem=parameters.maintenance_work_mem
        )
        if build.action != "exists":
            report.created.append(index_name)
        with db.connection() as conn:
            conn.execute(
                statement("partial_indexes", "record_member"), (version.version_id, instance, stream, index_name, rows)
            )
        report.members.append({"connector_instance_id": instance, "stream": stream, "rows": rows, "index": index_name})
    return report


def managed_partial_indexes(db: Database, version: EmbeddingVersion) -> list[str]:
    if not storage_for(db).ann_indexes:
        return []  # none can exist without pgvector
    with db.connection() as conn:
        return [row[2] for row in conn.execute(statement("partial_indexes", "managed"), (version.version_id,))]


def partial_index_stage(db: Database, version_key: str, band: HotSourceBand, parameters: HnswParameters) -> StageReport:
    started = time.monotonic()
    version = get_version(db, version_key)
    report = sync_partial_indexes(db, version, band, parameters)
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
