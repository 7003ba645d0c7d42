"""Adopting the reference server's semantic table in place: its catalog state (table.py), the JSONB ->
pgvector boot migration (migration.py) and its search, an adapter over semindex's planner and
engines (search.py)."""

from semindex.semantic_blob.migration import REASONS, MigrationReport, adoption_stage, migrate
from semindex.semantic_blob.search import search_blob
from semindex.semantic_blob.table import (
    DEFAULT_TABLE,
    PHASES,
    STAGING_COLUMN,
    BlobState,
    BlobTableError,
    blob_table_exists,
    default_index_name,
    inspect_blob_table,
    split_table_name,
)

__all__ = [
    "DEFAULT_TABLE", "PHASES", "REASONS", "STAGING_COLUMN", "BlobState", "BlobTableError", "MigrationReport",
    "adoption_stage", "blob_table_exists", "default_index_name", "inspect_blob_table", "migrate", "search_blob",
    "split_table_name",
]
