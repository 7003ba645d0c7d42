import dagster as dg

from semindex import chunks as stage
from semindex.chunking import ChunkingParameters

from ..resources import PostgresResource
from .metadata import materialization
from .raw_records import raw_records


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
    parameters = ChunkingParameters(config.size_tokens, config.overlap_tokens)
    return materialization(stage.chunks_stage(postgres.database(), parameters, batch_size=config.batch_size, progress_emit=context.log.info))
