import time

import dagster as dg

from assets.metadata import stage_metadata
from assets.partitions import embedding_versions
from assets.retrieval_evaluation import retrieval_evaluation
from resources import PostgresResource
from semindex import versions
from semindex.embeddings import get_version


@dg.asset(
    deps=[retrieval_evaluation],
    partitions_def=embedding_versions,
    kinds={"postgres"},
    group_name="index_pipeline",
    description="Promotion: one transaction re-reads the version's stored verdict and flips the serving version only "
    "if it passed. Runs for versions declared promotion = \"auto\"; \"manual\" ones wait for `semindex versions promote`.",
)
def serving_version(context: dg.AssetExecutionContext, postgres: PostgresResource) -> dg.MaterializeResult:
    db = postgres.database()
    version = get_version(db, context.partition_key)
    started = time.monotonic()
    if version.promotion == "manual" and not version.active:
        context.log.info(f"{version.version_key} is promoted by hand: semindex versions promote {version.version_key}")
        flip = None
    else:
        # Raises PromotionRefused when the stored verdict failed, even when this step runs alone.
        flip = versions.promote(db, version.version_key)
        context.log.info(
            f"{version.version_key} serves (was {flip.previous_version_key})" if flip.changed else f"{version.version_key} already serves"
        )
    serving = flip is not None  # promote() returned: the version serves, newly or already
    return dg.MaterializeResult(
        metadata=stage_metadata(
            row_count=1 if serving else 0,
            added=1 if flip and flip.changed else 0,
            changed=0,
            removed=0,
            seconds=time.monotonic() - started,
            work_rows=0,
            serving=serving,
            previous_version=flip.previous_version_key if flip and flip.previous_version_key else "",
            evaluation_id=flip.evaluation_id if flip and flip.evaluation_id else 0,
            promotion=version.promotion,
        )
    )
