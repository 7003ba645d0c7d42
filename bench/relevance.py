"""Ranking quality on the shipped judged sets, beside a reference BM25, exact dense search and their
reciprocal rank fusion, all computed in the same run.

    python bench/relevance.py [--version minilm-l6-v2] [--fit]

Builds (once; kept between runs, `--rebuild` starts over) a database holding the bundled sample
corpus and the judged documents, chunked, with lexical documents and the version's vectors. Then, per
judged set, at record level (each record's best rank), nDCG@10, recall@10 and MRR@10 for:

  semindex lexical / semantic / hybrid   through the public search API, with the set's scope
  BM25 reference        bm25s (Lucene variant, k1 1.5, b 0.75) over the same records: the text of the
                        set's fields, lower-cased word tokens
  exact dense           numpy cosine over the version's stored chunk vectors in scope, a record's
                        best chunk
  RRF(BM25, dense)      reciprocal rank fusion (k 60) of the two lines above

`--fit` also fits each fusion method's weights (blend: the lexical weight and the normalisation
depth; RRF: k and the lexical weight) on each set and reports them on the other set (both
directions): fitted weights must hold on the set they were not fitted on.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_database import bench_database  # noqa: E402
from semindex import chunks, embeddings, indexes, lifecycle, raw_records, relevance_metrics, retained_size  # noqa: E402
from semindex.chunking import ChunkingParameters  # noqa: E402
from semindex.database import Database  # noqa: E402
from semindex.judged_sets import JudgedSet, judged_document_paths, load_judged_sets  # noqa: E402
from semindex.search import Searcher, SearchRequest  # noqa: E402
from semindex.search.fusion import FusionSettings, fuse  # noqa: E402
from semindex.search.response import Hit  # noqa: E402
from semindex.vectors.version import get_version  # noqa: E402

DATABASE = "semindex_bench_relevance"
K = 10
DEPTH = 100  # how deep each list goes into fusion
WORD = re.compile(r"\w+")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def open_bench_database(rebuild: bool) -> Database:
    return bench_database(DATABASE, rebuild=rebuild)[0]


def build(db: Database, version_key: str) -> None:
    """The pipeline's library stages on the sample corpus and the judged documents (idempotent)."""
    raw_records.ingest_files(db, judged_document_paths())
    chunks.sync_chunks(db, ChunkingParameters())
    indexes.lexical_stage(db)
    version = lifecycle.ensure_registered(db, version_key)
    report = embeddings.backfill(db, version, progress_emit=log)
    if report.chunks:
        log(f"embedded {report.chunks} chunks in {report.seconds:.0f}s")
    retained_size.refresh_projection(db)


def records_of(judged_set: JudgedSet) -> dict[str, str]:
    """record key -> the text of the set's fields (what the reference BM25 indexes)."""
    scope = judged_set.scope
    texts = {}
    for path in judged_document_paths([judged_set.name]):
        for line in path.open(encoding="utf-8"):
            record = json.loads(line)
            if record.get("deleted") or (scope["connector_instance_id"] and record["connector_instance_id"] not in scope["connector_instance_id"]):
                continue
            if scope["stream"] and record["stream"] not in scope["stream"]:
                continue
            fields = [text for name, text in record["fields"].items() if not scope["field"] or name in scope["field"]]
            texts[record["record_key"]] = " ".join(fields)
    return texts


def bm25_reference(judged_set: JudgedSet) -> dict[str, list[str]]:
    import bm25s

    texts = records_of(judged_set)
    keys = list(texts)
    retriever = bm25s.BM25(method="lucene", k1=1.5, b=0.75)
    retriever.index([WORD.findall(texts[key].lower()) for key in keys], show_progress=False)
    rankings = {}
    for query in judged_set.queries:
        scores = retriever.get_scores(WORD.findall(query.text.lower()))
        order = np.argsort(-scores, kind="stable")[:DEPTH]
        rankings[query.query_id] = [keys[i] for i in order if scores[i] > 0]
    return rankings


def exact_dense(db: Database, searcher: Searcher, version_key: str, judged_set: JudgedSet) -> dict[str, list[str]]:
    version = get_version(db, version_key)
    scope = judged_set.search_scope()
    with db.connection() as conn:
        rows = conn.execute(
            f"SELECT record_key, embedding::text FROM {version.vectors_table} WHERE connector_instance_id = ANY(%s) "
            "AND (cardinality(%s::text[]) = 0 OR stream = ANY(%s)) AND (cardinality(%s::text[]) = 0 OR field = ANY(%s))",
            (list(scope.connector_instance_ids), list(scope.streams), list(scope.streams), list(scope.fields), list(scope.fields)),
        ).fetchall()
    keys = [row[0] for row in rows]
    matrix = np.array([json.loads(row[1]) for row in rows], dtype=np.float64)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    rankings = {}
    for query in judged_set.queries:
        vector = np.asarray(searcher.semantic.query_vector(version, query.text), dtype=np.float64)
        similarities = matrix @ (vector / np.linalg.norm(vector))
        ranked, seen = [], set()
        for i in np.argsort(-similarities, kind="stable"):
            if keys[i] not in seen:
                seen.add(keys[i])
                ranked.append(keys[i])
                if len(ranked) == DEPTH:
                    break
        rankings[query.query_id] = ranked
    return rankings


def rrf(*rankings: dict[str, list[str]], k: int = 60) -> dict[str, list[str]]:
    fused = {}
    for query_id in rankings[0]:
        scores: dict[str, float] = defaultdict(float)
        for ranking in rankings:
            for rank, key in enumerate(ranking[query_id], start=1):
                scores[key] += 1.0 / (k + rank)
        fused[query_id] = sorted(scores, key=lambda key: (-scores[key], key))
    return fused


def metrics(judged_set: JudgedSet, rankings: dict[str, list[str]]) -> dict[str, float]:
    per_query = [relevance_metrics.score_query(q.query_id, rankings[q.query_id], q.relevant, k=K) for q in judged_set.queries]
    summary = relevance_metrics.summarize(per_query)
    return {name: round(summary[name], 4) for name in ("ndcg@10", "recall@10", "mrr@10")}


def semindex_lists(searcher: Searcher, version_key: str, judged_set: JudgedSet) -> dict[str, dict[str, list[Hit]]]:
    """Per mode and query, the hits of the public search API (hybrid's ingredients go DEPTH deep)."""
    scope = judged_set.search_scope()
    lists: dict[str, dict[str, list[Hit]]] = {"lexical": {}, "semantic": {}, "hybrid": {}}
    for query in judged_set.queries:
        for mode, depth in (("lexical", DEPTH), ("semantic", DEPTH), ("hybrid", K)):
            request = SearchRequest(query.text, mode=mode, k=depth, scope=scope, version_key=version_key)
            lists[mode][query.query_id] = searcher.search(request).hits
    return lists


def keys(lists: dict[str, list[Hit]]) -> dict[str, list[str]]:
    return {query_id: [hit.record_key for hit in hits] for query_id, hits in lists.items()}


def fused_keys(lists, settings: FusionSettings) -> dict[str, list[str]]:
    out = {}
    for query_id in lists["lexical"]:
        lexical = [_copy(hit) for hit in lists["lexical"][query_id]]
        semantic = [_copy(hit) for hit in lists["semantic"][query_id]]
        out[query_id] = [hit.record_key for hit in fuse(settings, lexical, semantic, page=K)]
    return out


def _copy(hit: Hit) -> Hit:
    return Hit(**{**hit.__dict__, "scores": dict(hit.scores), "ranks": dict(hit.ranks)})


def candidate_fusions(method: str) -> list[FusionSettings]:
    if method == "rrf":
        return [FusionSettings("rrf", k, weight, 1.0) for k in (5, 10, 30, 60, 100) for weight in (0.5, 0.7, 0.9, 1.0, 1.1, 1.2, 1.5)]
    return [FusionSettings("blend", lexical_weight=weight, semantic_weight=round(1 - weight, 2), depth=depth)
            for weight in (0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6) for depth in (10, 20, 50, 100)]


def fit(judged_set: JudgedSet, lists, method: str) -> tuple[FusionSettings, float]:
    """The fusion of this method with the best nDCG@10 on this set."""
    scored = [(settings, metrics(judged_set, fused_keys(lists, settings))["ndcg@10"]) for settings in candidate_fusions(method)]
    return max(scored, key=lambda item: item[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", default="minilm-l6-v2", help="embedding version (default: %(default)s)")
    parser.add_argument("--rebuild", action="store_true", help="drop the benchmark database first")
    parser.add_argument("--fit", action="store_true", help="also fit fusion weights on each set, test on the other")
    args = parser.parse_args()
    db = open_bench_database(args.rebuild)
    build(db, args.version)
    searcher = Searcher(db)
    results, all_lists = {}, {}
    for judged_set in load_judged_sets():
        log(f"{judged_set.name}: {len(judged_set.queries)} queries")
        lists = semindex_lists(searcher, args.version, judged_set)
        all_lists[judged_set.name] = lists
        reference, dense = bm25_reference(judged_set), exact_dense(db, searcher, args.version, judged_set)
        results[judged_set.name] = {
            "semindex lexical": metrics(judged_set, keys(lists["lexical"])),
            "semindex semantic": metrics(judged_set, keys(lists["semantic"])),
            "semindex hybrid": metrics(judged_set, keys(lists["hybrid"])),
            "BM25 reference": metrics(judged_set, reference),
            "exact dense": metrics(judged_set, dense),
            "RRF(BM25, exact dense)": metrics(judged_set, rrf(reference, dense)),
        }
    if args.fit:
        sets = {judged_set.name: judged_set for judged_set in load_judged_sets()}
        results["fusion fit"] = {}
        for method in ("blend", "rrf"):
            for fitted_on, other in ((a, b) for a in sets for b in sets if a != b):
                settings, ndcg = fit(sets[fitted_on], all_lists[fitted_on], method)
                held_out = metrics(sets[other], fused_keys(all_lists[other], settings))["ndcg@10"]
                results["fusion fit"][f"{method} fitted on {fitted_on}"] = {
                    "settings": settings.as_dict(), f"ndcg@10 on {fitted_on}": ndcg, f"ndcg@10 on {other}": held_out,
                }
    print(json.dumps(results, indent=2))
    for name, rows in results.items():
        if name == "fusion fit":
            continue
        print(f"\n{name}\n{'':<26}{'nDCG@10':>9}{'recall@10':>11}{'MRR@10':>9}")
        for line, values in rows.items():
            print(f"{line:<26}{values['ndcg@10']:>9.4f}{values['recall@10']:>11.4f}{values['mrr@10']:>9.4f}")


if __name__ == "__main__":
    main()
