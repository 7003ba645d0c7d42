"""From chunk ids to hits: the chunk's record, field and text, read for the page only."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from psycopg.rows import class_row

from semindex.database import Database
from semindex.search.response import Hit
from semindex.sql_files import statement

SNIPPET_CHARS = 200


@dataclass(frozen=True)
class ChunkDetail:
    chunk_id: int
    connector_id: str
    connector_instance_id: str
    stream: str
    record_key: str
    field: str
    chunk_no: int
    content: str
    updated_at: datetime


def chunk_details(db: Database, chunk_ids: Sequence[int]) -> dict[int, ChunkDetail]:
    """The chunks that still exist among `chunk_ids` (one may be deleted between two reads)."""
    if not chunk_ids:
        return {}
    with db.connection() as conn:
        rows = conn.cursor(row_factory=class_row(ChunkDetail)).execute(
            statement("search", "chunk_details"), (list(chunk_ids),)
        ).fetchall()
    return {row.chunk_id: row for row in rows}


def hit_from(detail: ChunkDetail, snippet: str | None = None) -> Hit:
    """A hit at this chunk (any row with ChunkDetail's place fields will do: a lexical page row too)."""
    return Hit(
        detail.connector_id, detail.connector_instance_id, detail.stream, detail.record_key, detail.field,
        detail.chunk_no, cut_snippet(detail.content) if snippet is None else snippet, chunk_id=detail.chunk_id,
        updated_at=detail.updated_at,
    )


def cut_snippet(content: str, length: int = SNIPPET_CHARS) -> str:
    return content if len(content) <= length else content[: length - 1].rstrip() + "…"
