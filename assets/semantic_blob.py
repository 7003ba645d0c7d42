import dagster as dg

from semindex.semantic_blob import DEFAULT_TABLE, adoption_stage

from ..resources import PostgresResource
from .metadata import materialization


class SemanticBlobConfig(dg.Config):
    table: str = DEFAULT_TABLE
    """A reference-server semantic table to adopt (JSONB embeddings migrated to pgvector in place) when it exists."""


@dg.asset(
    kinds={"postgres", "pgvector"},
    group_name="index_pipeline",
    description="The reference server's semantic_search_blob, adopted in place when the database holds one: the "
    "resumable JSONB -> pgvector boot migration with quarantine, and its partial expression HNSW index. A no-op "
    "once migrated, and when there is no such table.",
)
def semantic_blob(context: dg.AssetExecutionContext, config: SemanticBlobConfig, postgres: PostgresResource) -> dg.MaterializeResult:
    return materialization(adoption_stage(postgres.database(), config.table, progress_emit=context.log.info))
