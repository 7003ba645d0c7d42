import time

import dagster as dg

from assets.metadata import stage_metadata
from assets.partial_index_set import partial_index_set
from assets.partitions import embedding_versions
from resources import PostgresResource
from semindex.embeddings import get_version
from semindex.evaluation import evaluate_version


def judged_table(judged: dict) -> str:
    """The judged-set scores as a markdown table for the UI."""
    sets = {name: summary for name, summary in judged.items() if "ndcg@10" in summary}
    lines = ["| set | queries | nDCG@10 | recall@10 | precision@10 | MRR@10 |", "|---|---|---|---|---|---|"]
    for name, s in sets.items():
        lines.append(f"| {name} | {int(s['queries'])} | {s['ndcg@10']:.4f} | {s['recall@10']:.4f} | {s['precision@10']:.4f} | {s['mrr@10']:.4f} |")
    return "\n".join(lines)


@dg.asset(
    deps=[partial_index_set],
    partitions_def=embedding_versions,
    kinds={"postgres", "pgvector"},
    group_name="index_pipeline",
    description="The version's stored verdict: judged query sets (nDCG@10, recall@10, precision@10, MRR), a shadow "
    "comparison with the serving version, HNSW recall and parity, judged against the version's own thresholds.",
)
def retrieval_evaluation(context: dg.AssetExecutionContext, postgres: PostgresResource) -> dg.MaterializeResult:
    db = postgres.database()
    version = get_version(db, context.partition_key)
    started = time.monotonic()
    evaluation = evaluate_version(db, version, progress_emit=context.log.info)
    queries = sum(int(s["queries"]) for s in evaluation.judged.values() if "queries" in s and "ndcg@10" in s)
    return dg.MaterializeResult(
        metadata=stage_metadata(
            row_count=queries,
            added=1,
            changed=0,
            removed=0,
            seconds=time.monotonic() - started,
            work_rows=queries,
            evaluation_id=evaluation.evaluation_id,
            passed=evaluation.passed,
            failures=dg.MetadataValue.json(evaluation.failures),
            judged_scores=dg.MetadataValue.md(judged_table(evaluation.judged)),
            judged=dg.MetadataValue.json(evaluation.judged),
            shadow=dg.MetadataValue.json(evaluation.shadow),
            thresholds=dg.MetadataValue.json(evaluation.thresholds),
        )
    )
