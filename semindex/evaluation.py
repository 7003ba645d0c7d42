"""Evaluation gates.

- hnsw_recall (semindex.quality): the version's HNSW index against an exact scan, over stored
  vectors as queries; measured again only when the index or a share of its vectors changed.
- evaluate_version: the verdict promotion depends on. Judged query sets (semindex.judged_sets) run
  through the real search path against the version, scored by nDCG@10, recall@10, precision@10 and
  MRR against the version's own thresholds; a shadow comparison with the serving version on a
  sample of queries (top-10 overlap, rank-biased overlap) and a regression limit against the serving
  version's judged scores; HNSW recall; vector/chunk parity. The verdict is stored in PostgreSQL.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from semindex import relevance_metrics
from semindex.database import Database
from semindex.encoders import load_encoder
from semindex.judged_sets import JudgedSet, load_judged_sets
from semindex.lifecycle import JUDGED_THRESHOLDS, StoredEvaluation, record_evaluation
from semindex.quality import (
    DEFAULT_HNSW_RECALL,
    check_parity,
    hnsw_recall_check,
)
from semindex.search import Searcher, SearchRequest, searcher_for
from semindex.shadow_traffic import live_traffic
from semindex.sql_files import statement
from semindex.stage_report import Markdown, StageReport
from semindex.vectors.version import EmbeddingVersion, active_version, get_version

log = logging.getLogger(__name__)

MODES = ("semantic", "lexical", "hybrid")
DEFAULT_MAX_REGRESSION = 0.02
DEFAULT_SHADOW_QUERIES = 50
# Records ranked per query: the metrics read 10; the shadow comparison's RBO reads deeper.
RANKING_DEPTH = 20
QUERIES_AT_ONCE = 4

def judged_rankings(db: Database, version: EmbeddingVersion, judged_set: JudgedSet, *,
                    searcher: Searcher | None = None, lexical: dict | None = None) -> dict[str, dict]:
    """Per mode, the record keys ranked for every query of the set by the search library (so the
    scope, the plans, the never-short fallback and the version's fusion are what is measured); the
    queries are encoded in one batch, and each is searched once lexically and once semantically."""
    searcher = searcher or searcher_for(db)
    encoder = load_encoder(version.encoder_spec)
    texts = [query.text for query in judged_set.queries]
    vectors = encoder.encode(texts) if texts else []
    scope = judged_set.search_scope()
    rankings: dict[str, dict] = {mode: {} for mode in (*MODES, "lexical_depth")}

    def rank(item) -> dict[str, list]:
        query, vector = item
        request = SearchRequest(query.text, mode="hybrid", k=RANKING_DEPTH, scope=scope, version_key=version.version_key)
        return searcher.rank_every_mode(request, vector=vector, lexical=(lexical or {}).get(query.query_id))

    # A few queries at once: each waits on the database most of the time.
    with ThreadPoolExecutor(max_workers=QUERIES_AT_ONCE, thread_name_prefix="semindex-evaluation") as pool:
        for query, ranked in zip(judged_set.queries, pool.map(rank, zip(judged_set.queries, vectors)), strict=True):
            for mode in MODES:
                rankings[mode][query.query_id] = [hit.record_key for hit in ranked[mode]]
            rankings["lexical_depth"][query.query_id] = ranked["lexical_depth"]  # hits, for reuse
    return rankings


def judged_coverage(db: Database, version: EmbeddingVersion, judged_set: JudgedSet) -> tuple[int, int]:
    """(relevant records the version has vectors for, relevant records in the set)."""
    relevant = sorted({key for query in judged_set.queries for key in query.relevant})
    with db.connection() as conn:
        found = conn.execute(
            statement("evaluation", "judged_coverage", vectors=version.vectors_table),
            {
                "instances": list(judged_set.scope.get("connector_instance_id", ())),
                "streams": list(judged_set.scope.get("stream", ())),
                "fields": list(judged_set.scope.get("field", ())),
                "record_keys": relevant,
            },
        ).fetchone()[0]
    return found, len(relevant)


def _summary(judged_set: JudgedSet, ranked: dict[str, list[str]], k: int) -> dict:
    per_query = [
        relevance_metrics.score_query(query.query_id, ranked[query.query_id], query.relevant, k=k)
        for query in judged_set.queries
    ]
    return {name: round(value, 4) for name, value in relevance_metrics.summarize(per_query).items()}


def judged_scores(db: Database, version: EmbeddingVersion, sets: list[JudgedSet], *, k: int = 10,
                  lexical: dict | None = None) -> tuple[dict, dict]:
    """Per set: the semantic ranking's summary at the top level, each mode's under "semantic",
    "lexical" and "hybrid"; and the rankings per mode, for the shadow comparison (with the lexical
    hits, which another version's evaluation may reuse as `lexical`)."""
    summaries, rankings = {}, {}
    for judged_set in sets:
        found, wanted = judged_coverage(db, version, judged_set)
        reused = (lexical or {}).get(judged_set.name, {}).get("lexical_depth")
        ranked = judged_rankings(db, version, judged_set, lexical=reused)
        by_mode = {mode: _summary(judged_set, ranked[mode], k) for mode in MODES}
        summaries[judged_set.name] = {**by_mode["semantic"], **by_mode, "covered_relevant": found, "relevant": wanted}
        rankings[judged_set.name] = ranked
    return summaries, rankings


def evaluate_version(
    db: Database,
    version: EmbeddingVersion,
    *,
    set_names: list[str] | None = None,
    progress_emit: Callable[[str], None] | None = None,
) -> StoredEvaluation:
    """Evaluate `version`, store the verdict and return it."""
    emit = progress_emit or log.info
    thresholds = version.thresholds
    sets = load_judged_sets(set_names)
    failures: list[str] = []
    started = time.monotonic()

    judged, rankings = judged_scores(db, version, sets)
    floors = thresholds.get("judged", {})
    for name, summary in judged.items():
        if summary["covered_relevant"] < summary["relevant"]:
            failures.append(
                f"{name}: only {summary['covered_relevant']} of {summary['relevant']} relevant records have vectors "
                "in this version; ingest the judged documents (semindex.judged_sets.judged_document_paths())"
            )
        for threshold_key, floor in floors.get(name, {}).items():
            mode, metric = JUDGED_THRESHOLDS[threshold_key]
            value = summary[mode][metric]
            if value < floor:
                failures.append(f"{name}: {threshold_key} {value:.4f} < {floor}")
    unknown_sets = sorted(set(floors) - set(judged))
    if unknown_sets:
        failures.append(f"thresholds name judged set(s) that were not evaluated: {', '.join(unknown_sets)}")
    emit(f"judged sets of {version.version_key!r} scored in {time.monotonic() - started:.1f}s: {judged}")

    shadow = shadow_comparison(db, version, sets, judged, rankings, thresholds, failures)
    if shadow.get("active"):
        emit(f"shadow comparison with {shadow['active']!r}: {shadow['summary']}")

    # Measured again only when the index or a share of its vectors changed (quality.hnsw_recall_check):
    # 200 exact scans cost a minute and a half at a million rows on every run otherwise.
    index = hnsw_recall_check(db, version, threshold=thresholds.get("hnsw_recall", DEFAULT_HNSW_RECALL))
    if not index.passed:
        failures.append(f"index: {index.summary}")
    parity = check_parity(db, version)
    if not parity.passed:
        failures.append(f"parity: {parity.summary}")
    judged["index"] = index.diagnostics
    judged["parity"] = parity.diagnostics
    evaluation = record_evaluation(db, version, judged=judged, shadow=shadow, failures=failures)
    emit(
        f"evaluation #{evaluation.evaluation_id} of {version.version_key!r}: "
        + ("passed" if evaluation.passed else "FAILED: " + "; ".join(failures))
        + f" ({time.monotonic() - started:.1f}s)"
    )
    return evaluation


def shadow_comparison(
    db: Database,
    version: EmbeddingVersion,
    sets: list[JudgedSet],
    judged: dict,
    rankings: dict,
    thresholds: dict,
    failures: list[str],
) -> dict:
    """Compare the candidate with the serving version: overlap and RBO on a sample of queries
    (reported), and the candidate's judged nDCG@10 against the serving version's (gated)."""
    active = active_version(db)
    if active is None or active.version_id == version.version_id:
        return {"active": None, "summary": "no other version is serving: nothing to compare"}
    sample_size = thresholds.get("shadow_queries", DEFAULT_SHADOW_QUERIES)
    max_regression = thresholds.get("max_regression", DEFAULT_MAX_REGRESSION)
    # Lexical ranking is the same for both versions: the candidate's is reused.
    active_judged, active_rankings = judged_scores(db, active, sets, lexical=rankings)
    overlaps, rbos, per_set = [], [], {}
    for judged_set in sets:
        # A deterministic spread over each set, so repeated evaluations compare the same queries.
        share = sample_size // len(sets) if sample_size else 0
        sample = judged_set.queries[:: max(1, len(judged_set.queries) // share)][:share] if share else ()
        ours, theirs = rankings[judged_set.name]["semantic"], active_rankings[judged_set.name]["semantic"]
        set_overlaps = [relevance_metrics.top_k_overlap(ours[q.query_id], theirs[q.query_id]) for q in sample]
        set_rbos = [relevance_metrics.rank_biased_overlap(ours[q.query_id], theirs[q.query_id]) for q in sample]
        overlaps += set_overlaps
        rbos += set_rbos
        candidate_ndcg, active_ndcg = judged[judged_set.name]["ndcg@10"], active_judged[judged_set.name]["ndcg@10"]
        candidate_hybrid = judged[judged_set.name]["hybrid"]["ndcg@10"]
        active_hybrid = active_judged[judged_set.name]["hybrid"]["ndcg@10"]
        per_set[judged_set.name] = {
            "queries": len(sample),
            "overlap@10": round(sum(set_overlaps) / len(set_overlaps), 4) if sample else None,
            "rbo@10": round(sum(set_rbos) / len(set_rbos), 4) if sample else None,
            "ndcg@10": candidate_ndcg,
            "active_ndcg@10": active_ndcg,
            "ndcg_delta": round(candidate_ndcg - active_ndcg, 4),
            "hybrid_ndcg@10": candidate_hybrid,
            "active_hybrid_ndcg@10": active_hybrid,
            "hybrid_ndcg_delta": round(candidate_hybrid - active_hybrid, 4),
        }
        # Semantic and hybrid rankings both serve users: neither may regress beyond the limit.
        for what, candidate, serving in (("nDCG@10", candidate_ndcg, active_ndcg), ("hybrid nDCG@10", candidate_hybrid, active_hybrid)):
            if candidate < serving - max_regression:
                failures.append(
                    f"shadow: {judged_set.name} {what} {candidate:.4f} regresses more than {max_regression} "
                    f"from the serving version {active.version_key!r} ({serving:.4f})"
                )
    overlap = round(sum(overlaps) / len(overlaps), 4) if overlaps else None
    rbo = round(sum(rbos) / len(rbos), 4) if rbos else None
    # What the search service mirrored to this version from real queries (reported, not gated).
    live = live_traffic(db, version.version_key)
    live_summary = "; live traffic: " + ", ".join(
        f"{mode} {figures['queries']} queries, overlap {figures['overlap@10']}, RBO {figures['rbo@10']}"
        for mode, figures in live.items()) if live else ""
    return {
        "active": active.version_key,
        "queries": len(overlaps),
        "overlap@10": overlap,
        "rbo@10": rbo,
        "max_regression": max_regression,
        "sets": per_set,
        "live_traffic": live,
        "summary": f"{len(overlaps)} judged queries, top-10 overlap {overlap}, RBO {rbo}{live_summary}",
    }


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value and abs(value) != float("inf")


# Settings, not measures: constant from run to run, nothing to plot.
_NOT_MEASURES = {"k", "ef_search"}


def _numbers(prefix: str, facts: dict) -> dict[str, float | int]:
    return {f"{prefix}.{key}": value for key, value in (facts or {}).items() if _number(value) and key not in _NOT_MEASURES}


def judged_metrics(judged: dict) -> dict[str, float | int]:
    """A stored verdict's judged part as numbers under stable names, to plot from one evaluation to
    the next: `judged.<set>.<mode>.<metric>` (ndcg@10, recall@10, precision@10, mrr@10 for the
    semantic, lexical and hybrid rankings), `judged.<set>.queries`, `.covered_relevant`, `.relevant`;
    the HNSW recall gate as `index.*` (recall, worst_query_recall, queries) and the parity counts as
    `parity.*` (chunks, vectors, missing, orphaned, backfill_pending)."""
    metrics: dict[str, float | int] = {}
    for name, summary in judged.items():
        if name in ("index", "parity") or not isinstance(summary, dict) or "ndcg@10" not in summary:
            continue
        for mode in MODES:
            for metric, value in (summary.get(mode) or {}).items():
                if metric != "queries" and _number(value):
                    metrics[f"judged.{name}.{mode}.{metric}"] = float(value)
        for count in ("queries", "covered_relevant", "relevant"):
            if _number(summary.get(count)):
                metrics[f"judged.{name}.{count}"] = int(summary[count])
    metrics |= _numbers("index", judged.get("index"))
    metrics |= _numbers("parity", judged.get("parity"))
    return metrics


def shadow_metrics(shadow: dict) -> dict[str, float | int]:
    """The shadow comparison as numbers under stable names: `shadow.queries`, `shadow.overlap@10`,
    `shadow.rbo@10`, per judged set `shadow.<set>.*` (its overlap, RBO, nDCG@10 and the delta from the
    serving version), and the live traffic the service mirrored as `shadow.live.<mode>.*`."""
    metrics = _numbers("shadow", {key: shadow.get(key) for key in ("queries", "overlap@10", "rbo@10", "max_regression")})
    for name, figures in (shadow.get("sets") or {}).items():
        metrics |= _numbers(f"shadow.{name}", figures)
    for mode, figures in (shadow.get("live_traffic") or {}).items():
        metrics |= _numbers(f"shadow.live.{mode}", figures)
    return metrics


def judged_table(judged: dict) -> str:
    """The judged-set scores as a Markdown table."""
    sets = {name: summary for name, summary in judged.items() if "ndcg@10" in summary}
    lines = ["| set | mode | queries | nDCG@10 | recall@10 | precision@10 | MRR@10 |", "|---|---|---|---|---|---|---|"]
    for name, summary in sets.items():
        for mode in MODES:
            s = summary.get(mode, summary)
            lines.append(f"| {name} | {mode} | {int(s['queries'])} | {s['ndcg@10']:.4f} | {s['recall@10']:.4f} | "
                         f"{s['precision@10']:.4f} | {s['mrr@10']:.4f} |")
    return "\n".join(lines)


def evaluation_stage(db: Database, version_key: str, *, progress_emit: Callable[[str], None] | None = None) -> StageReport:
    started = time.monotonic()
    evaluation = evaluate_version(db, get_version(db, version_key), progress_emit=progress_emit)
    queries = sum(int(s["queries"]) for s in evaluation.judged.values() if "queries" in s and "ndcg@10" in s)
    return StageReport(
        row_count=queries,
        added=1,
        seconds=time.monotonic() - started,
        work_rows=queries,
        details={
            "evaluation_id": evaluation.evaluation_id,
            "passed": evaluation.passed,
            "failures": evaluation.failures,
            "judged_scores": Markdown(judged_table(evaluation.judged)),
            "judged": evaluation.judged,
            "shadow": evaluation.shadow,
            "thresholds": evaluation.thresholds,
        },
        metrics={**judged_metrics(evaluation.judged), **shadow_metrics(evaluation.shadow), "failure_count": len(evaluation.failures)},
    )
