"""Retrieval metrics over ranked lists of document ids, with binary relevance. Pure Python.

Every function takes a ranked list of ids (best first) and either a set of relevant ids or a
second ranking. A ranking may name the same id more than once (several chunks of one record come
back as separate hits): each function first drops repeats, keeping the first occurrence, so a
record counts once, at its best rank, and a repeat never pushes other ids out of the top k.

Conventions, chosen so a judged query set cannot be gamed and no call divides by zero:

* ``k`` is a cut-off depth and must be at least 1.
* A query with no relevant ids scores 0.0 on every relevance metric (the judged sets never
  contain one; ``semindex.judged_sets`` drops such queries when it builds them).
* ``precision_at_k`` divides by ``k`` even when fewer than ``k`` ids were returned (the standard
  definition: returning less is not rewarded).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, fields

from semindex.errors import InvalidInput

__all__ = [
    "QueryScores",
    "dedupe",
    "distance_recall",
    "ndcg_at_k",
    "precision_at_k",
    "rank_biased_overlap",
    "recall_at_k",
    "reciprocal_rank",
    "score_query",
    "summarize",
    "top_k_overlap",
]


def _check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise InvalidInput(f"k must be a positive integer, got {k!r}")


def dedupe(ranked: Iterable[Hashable], k: int | None = None) -> list:
    """The ranking without repeats (first occurrence kept), cut at ``k`` distinct ids when given."""
    if k is not None:
        _check_k(k)
    seen: set = set()
    out: list = []
    for doc_id in ranked:
        if doc_id in seen:
            continue
        seen.add(doc_id)
        out.append(doc_id)
        if k is not None and len(out) == k:
            break
    return out


def _hits(ranked: Iterable[Hashable], relevant: Iterable[Hashable], k: int) -> tuple[list[bool], int]:
    """Relevance of each of the top k distinct ids, and the number of relevant ids."""
    relevant_set = set(relevant)
    return [doc_id in relevant_set for doc_id in dedupe(ranked, k)], len(relevant_set)


def ndcg_at_k(ranked: Iterable[Hashable], relevant: Iterable[Hashable], k: int = 10) -> float:
    """Normalised discounted cumulative gain at k, binary gains, log2(rank + 1) discount.

    The ideal ranking puts min(k, |relevant|) relevant ids first.
    """
    _check_k(k)
    hits, relevant_count = _hits(ranked, relevant, k)
    if relevant_count == 0:
        return 0.0
    dcg = sum(1.0 / math.log2(rank + 1) for rank, hit in enumerate(hits, start=1) if hit)
    ideal = sum(1.0 / math.log2(rank + 1) for rank in range(1, min(k, relevant_count) + 1))
    return dcg / ideal


def recall_at_k(ranked: Iterable[Hashable], relevant: Iterable[Hashable], k: int = 10) -> float:
    """Share of the relevant ids found in the top k."""
    _check_k(k)
    hits, relevant_count = _hits(ranked, relevant, k)
    if relevant_count == 0:
        return 0.0
    return sum(hits) / relevant_count


# Two vectors that tie exactly can come back a few ulps apart from different plans (an index walk
# and a sequential scan sum in different orders): 1e-6 is far below any real gap between texts.
DISTANCE_TIE_TOLERANCE = 1e-6


def distance_recall(found: Sequence[float], exact: Sequence[float], k: int = 10,
                    tolerance: float = DISTANCE_TIE_TOLERANCE) -> float:
    """Recall@k of an approximate nearest-neighbour answer, judged by distance rather than id.

    `found` holds the distances the approximate search returned, `exact` the exact search's, both
    best first. A hit counts as correct when its distance is within `tolerance` of the exact k-th
    distance: rows that repeat one text share one vector, so any of the tied rows is an equally
    right answer, and counting by id would call the index wrong for picking another of them. An
    empty exact answer (nothing in scope) scores 1.0 when nothing was found."""
    _check_k(k)
    wanted = min(k, len(exact))
    if wanted == 0:
        return 1.0 if not found else 0.0
    kth = sorted(exact)[wanted - 1] + tolerance
    return min(wanted, sum(1 for distance in list(found)[:k] if distance <= kth)) / wanted


def precision_at_k(ranked: Iterable[Hashable], relevant: Iterable[Hashable], k: int = 10) -> float:
    """Relevant ids in the top k, divided by k (not by the number returned)."""
    _check_k(k)
    hits, relevant_count = _hits(ranked, relevant, k)
    if relevant_count == 0:
        return 0.0
    return sum(hits) / k


def reciprocal_rank(ranked: Iterable[Hashable], relevant: Iterable[Hashable], k: int | None = None) -> float:
    """1 / rank of the first relevant id (ranks after dedupe, from 1), 0.0 when none is in the top k
    (or anywhere, when k is None). Its mean over queries is MRR."""
    relevant_set = set(relevant)
    for rank, doc_id in enumerate(dedupe(ranked, k), start=1):
        if doc_id in relevant_set:
            return 1.0 / rank
    return 0.0


def top_k_overlap(a: Iterable[Hashable], b: Iterable[Hashable], k: int = 10) -> float:
    """|top-k(a) ∩ top-k(b)| / k, order within the top k ignored.

    Divides by k, so two identical rankings shorter than k score below 1 (and two empty ones 0).
    """
    _check_k(k)
    return len(set(dedupe(a, k)) & set(dedupe(b, k))) / k


def rank_biased_overlap(a: Iterable[Hashable], b: Iterable[Hashable], p: float = 0.9, k: int = 10) -> float:
    """Extrapolated rank-biased overlap, RBO_ext (Webber, Moffat & Zobel 2010, eq. 32), of the two
    rankings cut at k.

    Both rankings are deduped and cut at k; the evaluation depth is the longer cut list's length
    (k whenever either ranking has k distinct ids). RBO_ext assumes the agreement seen at that
    depth continues below it, so it is a point estimate in [0, 1] rather than the lower bound
    RBO_min: identical rankings score exactly 1, disjoint ones 0, and it is symmetric. When the
    lists differ in length the shorter one is treated as uneven (eq. 32), not padded. Two empty
    rankings agree completely (1.0); an empty ranking against a non-empty one scores 0.0.
    ``p`` (0 < p < 1) is the persistence: the top d ranks carry 1 - p**d of the weight (at
    p = 0.9, the top 10 carry about 65%).
    """
    _check_k(k)
    if not 0.0 < p < 1.0:
        raise InvalidInput(f"RBO persistence p must be strictly between 0 and 1, got {p!r}")
    first, second = dedupe(a, k), dedupe(b, k)
    longer, shorter = (first, second) if len(first) >= len(second) else (second, first)
    l, s = len(longer), len(shorter)
    if s == 0:
        return 1.0 if l == 0 else 0.0

    # overlap[d] = |longer[:d] ∩ shorter[:d]| for d <= s; beyond s the shorter list has ended, so
    # overlap[d] = |longer[:d] ∩ shorter| (the paper's X_d for uneven lists).
    overlap = [0] * (l + 1)
    seen_longer: set = set()
    seen_shorter: set = set()
    common = 0
    for depth in range(1, l + 1):
        item_l = longer[depth - 1]
        if depth <= s:
            item_s = shorter[depth - 1]
            if item_l == item_s:
                common += 1
            else:
                common += (item_l in seen_shorter) + (item_s in seen_longer)
            seen_shorter.add(item_s)
        else:
            common += item_l in seen_shorter
        seen_longer.add(item_l)
        overlap[depth] = common

    x_s, x_l = overlap[s], overlap[l]
    weighted = sum(overlap[d] / d * p**d for d in range(1, l + 1))
    weighted += sum(x_s * (d - s) / (s * d) * p**d for d in range(s + 1, l + 1))
    score = (1 - p) / p * weighted + ((x_l - x_s) / l + x_s / s) * p**l
    # Exact arithmetic gives [0, 1]; clamp the last ulp of rounding so callers can rely on it.
    return min(1.0, max(0.0, score))


@dataclass(frozen=True)
class QueryScores:
    """One query's scores at cut-off k; ``overlap`` and ``rbo`` compare the ranking with a
    reference ranking (e.g. the active version's) and are None when there was none."""

    query_id: str
    k: int
    ndcg: float
    recall: float
    precision: float
    reciprocal_rank: float
    overlap: float | None = None
    rbo: float | None = None


def score_query(
    query_id: str,
    ranked: Sequence[Hashable],
    relevant: Iterable[Hashable],
    *,
    k: int = 10,
    reference: Sequence[Hashable] | None = None,
    rbo_p: float = 0.9,
) -> QueryScores:
    """Every metric for one query; reciprocal rank is cut at k like the others."""
    relevant_set = frozenset(relevant)
    return QueryScores(
        query_id=query_id,
        k=k,
        ndcg=ndcg_at_k(ranked, relevant_set, k),
        recall=recall_at_k(ranked, relevant_set, k),
        precision=precision_at_k(ranked, relevant_set, k),
        reciprocal_rank=reciprocal_rank(ranked, relevant_set, k),
        overlap=None if reference is None else top_k_overlap(ranked, reference, k),
        rbo=None if reference is None else rank_biased_overlap(ranked, reference, rbo_p, k),
    )


_METRIC_NAMES = {"ndcg": "ndcg@{k}", "recall": "recall@{k}", "precision": "precision@{k}",
                 "reciprocal_rank": "mrr@{k}", "overlap": "overlap@{k}", "rbo": "rbo@{k}"}


def summarize(per_query: Iterable[QueryScores]) -> dict[str, float]:
    """Mean of each metric over the queries, keyed like ``ndcg@10``, ``mrr@10``, plus ``queries``
    (the count). ``overlap@k``/``rbo@k`` appear when every query has them."""
    scores = list(per_query)
    if not scores:
        raise InvalidInput("summarize needs at least one QueryScores")
    depths = {score.k for score in scores}
    if len(depths) != 1:
        raise InvalidInput(f"scores were computed at different cut-offs {sorted(depths)}; summarize one k at a time")
    (k,) = depths
    summary: dict[str, float] = {"queries": float(len(scores))}
    for field in fields(QueryScores):
        if field.name not in _METRIC_NAMES:
            continue
        values = [getattr(score, field.name) for score in scores]
        present = [value for value in values if value is not None]
        if not present:
            continue
        if len(present) != len(values):
            raise InvalidInput(
                f"{field.name} is missing for {len(values) - len(present)} of {len(values)} queries; "
                "score every query against a reference or none"
            )
        summary[_METRIC_NAMES[field.name].format(k=k)] = math.fsum(present) / len(present)
    return summary
