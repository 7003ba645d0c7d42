import dagster as dg

from assets.chunks import chunks
from assets.metadata import stage_metadata
from assets.partitions import embedding_versions
from assets.vector_column import vector_column
from resources import PostgresResource
from semindex import indexes as stage
from semindex.embeddings import get_version, vector_count
from semindex.chunks import live_chunk_count


class HnswConfig(dg.Config):
    m: int = 16
    ef_construction: int = 64
    maintenance_work_mem: str = "256MB"


def _build_metadata(build: stage.IndexBuild, rows: int) -> dict:
    return stage_metadata(
        row_count=rows,
        added=1 if build.added else 0,
        changed=0,
        removed=0,
        seconds=build.seconds,
        work_rows=rows if build.added else 0,
        index=build.index_name,
        action=build.action,
        concurrently=build.concurrently,
    )


@dg.asset(
    deps=[vector_column],
    partitions_def=embedding_versions,
    kinds={"postgres", "pgvector"},
    group_name="index_pipeline",
    description="The version's HNSW index, built serially after loading; CONCURRENTLY once the version serves queries. "
    "Skipped in JSONB mode (no pgvector), where semantic search is a brute-force scan.",
)
def hnsw_index(context: dg.AssetExecutionContext, config: HnswConfig, postgres: PostgresResource) -> dg.MaterializeResult:
    db = postgres.database()
    version = get_version(db, context.partition_key)
    parameters = stage.HnswParameters(config.m, config.ef_construction, config.maintenance_work_mem)
    build = stage.build_hnsw(db, version, parameters)
    context.log.info(f"{build.index_name}: {build.action} in {build.seconds:.1f}s")
    return dg.MaterializeResult(metadata=_build_metadata(build, vector_count(db, version)))


@dg.asset(
    deps=[chunks],
    kinds={"postgres"},
    group_name="index_pipeline",
    description="GIN over (connector_instance_id, stream, tsvector) through btree_gin, for scoped lexical search.",
)
def lexical_index(context: dg.AssetExecutionContext, postgres: PostgresResource) -> dg.MaterializeResult:
    db = postgres.database()
    build = stage.build_lexical_index(db)
    context.log.info(f"{build.index_name}: {build.action} in {build.seconds:.1f}s")
    return dg.MaterializeResult(metadata=_build_metadata(build, live_chunk_count(db)))
