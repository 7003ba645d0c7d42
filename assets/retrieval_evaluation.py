import dagster as dg

from semindex.evaluation import evaluation_stage

from ..resources import PostgresResource
from .metadata import materialization
from .ann_substrate import ann_substrate
from .partial_index_set import partial_index_set
from .partitions import embedding_versions


@dg.asset(
    deps=[partial_index_set, ann_substrate],
    partitions_def=embedding_versions,
    kinds={"postgres", "pgvector"},
    group_name="index_pipeline",
    description="The version's stored verdict: judged query sets (nDCG@10, recall@10, precision@10, MRR), a shadow "
    "comparison with the serving version, HNSW recall and parity, judged against the version's own thresholds.",
)
def retrieval_evaluation(context: dg.AssetExecutionContext, postgres: PostgresResource) -> dg.MaterializeResult:
    return materialization(evaluation_stage(postgres.database(), context.partition_key, progress_emit=context.log.info))
