"""Asset checks: quality and evaluation gates. The verdicts come from the library; diagnostics go to
the check's metadata. Checks of a version's assets are partitioned like them, so the UI shows each
embedding version's own results."""

import warnings

import dagster as dg

# Partitioned checks are a preview feature in Dagster 1.13 (pinned exactly in pyproject.toml); they
# are what ties each check result to its embedding version in the UI, so the warning is expected.
warnings.filterwarnings("ignore", message="Specifying a partitions_def on an AssetCheckSpec is currently in preview")

from semindex import evaluation, lifecycle, quality
from semindex.ann_substrate import recall as ann_recall
from semindex.indexes import LEXICAL_INDEX_NAME
from semindex.partial_indexes import managed_partial_indexes
from semindex.vectors.version import get_version

from ..resources import PostgresResource
from .ann_substrate import ann_substrate
from .chunks import chunks
from .embeddings import embeddings
from .indexes import hnsw_index, lexical_index
from .metadata import metric_entries
from .partial_index_set import partial_index_set
from .partitions import embedding_versions
from .retrieval_evaluation import retrieval_evaluation


def _result(verdict: quality.Verdict, *, severity=dg.AssetCheckSeverity.ERROR) -> dg.AssetCheckResult:
    """The verdict's numbers as numeric metadata (plotted from one check run to the next), then its
    summary and diagnostics."""
    return dg.AssetCheckResult(
        passed=verdict.passed,
        severity=severity,
        description=verdict.summary,
        metadata={
            **metric_entries(verdict.metrics),
            "summary": verdict.summary,
            "diagnostics": dg.MetadataValue.json(verdict.diagnostics),
        },
    )


@dg.asset_check(asset=chunks, description="pandera schema over a sample of chunks")
def chunk_schema(postgres: PostgresResource) -> dg.AssetCheckResult:
    return _result(quality.check_chunk_frame(postgres.database()))


@dg.asset_check(
    asset=embeddings,
    partitions_def=embedding_versions,
    description="pandera schema over sampled vectors: dimensions, finite values, unit norm for cosine")
def embedding_schema(context: dg.AssetCheckExecutionContext, postgres: PostgresResource) -> dg.AssetCheckResult:
    db = postgres.database()
    return _result(quality.check_embedding_frame(db, get_version(db, context.partition_key)))


@dg.asset_check(
    asset=embeddings,
    partitions_def=embedding_versions,
    description="once the backfill is done, every live chunk has exactly one vector (checked over the chunk ids "
    "changed since the last passing check; in full the first time, weekly, and when the kept counts disagree)")
def embedding_parity(context: dg.AssetCheckExecutionContext, postgres: PostgresResource) -> dg.AssetCheckResult:
    db = postgres.database()
    return _result(quality.check_parity(db, get_version(db, context.partition_key)))


@dg.asset_check(asset=lexical_index, description="the lexical GIN index exists and is valid")
def lexical_index_valid(postgres: PostgresResource) -> dg.AssetCheckResult:
    return _result(quality.check_index_validity(postgres.database(), [LEXICAL_INDEX_NAME]))


@dg.asset_check(
    asset=partial_index_set,
    partitions_def=embedding_versions,
    description="the version's HNSW index and every managed partial index exist and are valid")
def vector_indexes_valid(context: dg.AssetCheckExecutionContext, postgres: PostgresResource) -> dg.AssetCheckResult:
    db = postgres.database()
    version = get_version(db, context.partition_key)
    return _result(quality.check_index_validity(db, [version.hnsw_index_name, *managed_partial_indexes(db, version)]))


@dg.asset_check(
    asset=hnsw_index,
    partitions_def=embedding_versions,
    blocking=True,
    description="HNSW recall@10 against exact search on 200 sampled queries meets the version's floor (default 0.95); "
    "measured again when the vectors or the index changed since the last measurement, or weekly",
)
def hnsw_recall(context: dg.AssetCheckExecutionContext, postgres: PostgresResource) -> dg.AssetCheckResult:
    db = postgres.database()
    version = get_version(db, context.partition_key)
    threshold = version.thresholds.get("hnsw_recall", quality.DEFAULT_HNSW_RECALL)
    return _result(quality.hnsw_recall_check(db, version, threshold=threshold))


def _stored_verdict(context: dg.AssetCheckExecutionContext, postgres: PostgresResource, prefix: str | None) -> dg.AssetCheckResult:
    """A gate over the verdict retrieval_evaluation stored; `prefix` picks its share of the failures."""
    db = postgres.database()
    version = get_version(db, context.partition_key)
    stored = lifecycle.latest_evaluation(db, version)
    if stored is None:
        return dg.AssetCheckResult(passed=False, description=f"{version.version_key} has no stored evaluation")
    mine = [f for f in stored.failures if (f.startswith(prefix) if prefix else not f.startswith("shadow:"))]
    shadow = prefix == "shadow:"
    part = stored.shadow if shadow else stored.judged
    # Every score, recall and count as a number of its own, so the UI plots them from one evaluation
    # to the next; the evaluation's id is text (a number the UI would plot too).
    metrics = evaluation.shadow_metrics(part) if shadow else evaluation.judged_metrics(part)
    return dg.AssetCheckResult(
        passed=not mine,
        description="; ".join(mine) or f"evaluation #{stored.evaluation_id} passed this gate",
        metadata={
            **metric_entries({**metrics, "failure_count": len(mine)}),
            "evaluation_id": dg.MetadataValue.text(str(stored.evaluation_id)),
            "failures": dg.MetadataValue.json(mine),
            "scores": dg.MetadataValue.json(part),
            "thresholds": dg.MetadataValue.json(stored.thresholds),
        },
    )


@dg.asset_check(
    asset=retrieval_evaluation,
    partitions_def=embedding_versions,
    blocking=True,
    description="judged query sets meet the version's nDCG@10 / recall@10 / precision@10 / MRR floors, with HNSW recall and parity",
)
def judged_relevance(context: dg.AssetCheckExecutionContext, postgres: PostgresResource) -> dg.AssetCheckResult:
    return _stored_verdict(context, postgres, None)


@dg.asset_check(
    asset=retrieval_evaluation,
    partitions_def=embedding_versions,
    blocking=True,
    description="against the serving version: top-10 overlap and RBO reported, nDCG@10 regression within the version's limit",
)
def shadow_regression(context: dg.AssetCheckExecutionContext, postgres: PostgresResource) -> dg.AssetCheckResult:
    return _stored_verdict(context, postgres, "shadow:")


@dg.asset_check(
    asset=ann_substrate,
    partitions_def=embedding_versions,
    blocking=True,
    description="zvec versions: the published generation's recall@10 through the zvec plan against exact search, "
    "unfiltered and scoped, meets the version's floor (the zvec plan serves only a generation that passed)",
)
def substrate_recall(context: dg.AssetCheckExecutionContext, postgres: PostgresResource) -> dg.AssetCheckResult:
    db = postgres.database()
    return _result(ann_recall.substrate_recall(db, get_version(db, context.partition_key)))


all_checks = [
    chunk_schema,
    embedding_schema,
    embedding_parity,
    lexical_index_valid,
    vector_indexes_valid,
    hnsw_recall,
    substrate_recall,
    judged_relevance,
    shadow_regression,
]
