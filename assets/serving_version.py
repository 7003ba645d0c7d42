import dagster as dg

from semindex.lifecycle import serving_stage

from ..resources import PostgresResource
from .metadata import materialization
from .partitions import embedding_versions
from .retrieval_evaluation import retrieval_evaluation


@dg.asset(
    deps=[retrieval_evaluation],
    partitions_def=embedding_versions,
    kinds={"postgres"},
    group_name="index_pipeline",
    description="Promotion: one transaction re-reads the version's stored verdict and flips the serving version only "
    "if it passed. Runs for versions declared promotion = \"auto\"; \"manual\" ones wait for `semindex versions promote`.",
)
def serving_version(context: dg.AssetExecutionContext, postgres: PostgresResource) -> dg.MaterializeResult:
    return materialization(serving_stage(postgres.database(), context.partition_key, log=context.log.info))
