import time

import dagster as dg

from assets.metadata import stage_metadata
from assets.raw_records import raw_records
from resources import PostgresResource
from semindex import chunks as stage
from semindex.chunking import ChunkingParameters


class ChunksConfig(dg.Config):
    size_tokens: int = 128
    overlap_tokens: int = 32
    batch_size: int = 2000


@dg.asset(
    deps=[raw_records],
    kinds={"postgres", "python"},
    group_name="index_pipeline",
    description="Normalised, overlapping, token-aware chunks of every changed record, with semantic keys and a lexical tsvector.",
)
def chunks(context: dg.AssetExecutionContext, config: ChunksConfig, postgres: PostgresResource) -> dg.MaterializeResult:
    db = postgres.database()
    parameters = ChunkingParameters(config.size_tokens, config.overlap_tokens)
    started = time.monotonic()
    report = stage.sync_chunks(db, parameters, batch_size=config.batch_size, progress_emit=context.log.info)
    return dg.MaterializeResult(
        metadata=stage_metadata(
            row_count=stage.live_chunk_count(db),
            added=report.chunks_added,
            changed=0,
            removed=report.chunks_removed,
            seconds=time.monotonic() - started,
            work_rows=report.records,
            records_rechunked=report.records,
            chunks_kept=report.chunks_kept,
        )
    )
