import time

import dagster as dg

from assets.embeddings import embeddings
from assets.metadata import stage_metadata
from resources import PostgresResource
from semindex.retained_size import projection, refresh_projection


@dg.asset(
    deps=[embeddings],
    kinds={"postgres"},
    group_name="index_pipeline",
    description="Per (connector_instance_id, stream): records, chunks, vectors per version, bytes, dirty flag; the planner's cardinality estimates.",
)
def retained_size_projection(context: dg.AssetExecutionContext, postgres: PostgresResource) -> dg.MaterializeResult:
    db = postgres.database()
    started = time.monotonic()
    recomputed = refresh_projection(db)
    sources = projection(db)
    table = "\n".join(
        ["| connector instance | stream | records | chunks | vectors | bytes |", "|---|---|---|---|---|---|"]
        + [
            f"| {s.connector_instance_id} | {s.stream} | {s.record_count} | {s.chunk_count} | "
            f"{', '.join(f'{k}: {v}' for k, v in s.embedded_counts.items())} | {s.bytes} |"
            for s in sources[:50]
        ]
    )
    return dg.MaterializeResult(
        metadata=stage_metadata(
            row_count=len(sources),
            added=0,
            changed=recomputed,
            removed=0,
            seconds=time.monotonic() - started,
            work_rows=recomputed,
            preview=dg.MetadataValue.md(table),
        )
    )
