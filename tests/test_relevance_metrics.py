"""Retrieval metrics against values worked out by hand, and RBO against a literal transcription
of Webber et al.'s formula."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from semindex.relevance_metrics import (
    QueryScores,
    dedupe,
    ndcg_at_k,
    precision_at_k,
    rank_biased_overlap,
    recall_at_k,
    distance_recall,
    reciprocal_rank,
    score_query,
    summarize,
    top_k_overlap,
)

LOG2_3 = math.log2(3)


def test_dedupe_keeps_first_occurrence_and_cuts_at_k_distinct_ids():
    assert dedupe(["a", "b", "a", "c", "b", "d"]) == ["a", "b", "c", "d"]
    assert dedupe(["a", "a", "a", "b", "c"], k=2) == ["a", "b"]
    assert dedupe([]) == []


def test_ndcg_hand_computed():
    # hits at ranks 1 and 3: DCG = 1 + 1/log2(4) = 1.5; ideal = 1 + 1/log2(3)
    assert ndcg_at_k(["a", "x", "b"], {"a", "b"}) == pytest.approx(1.5 / (1 + 1 / LOG2_3))
    assert ndcg_at_k(["a", "b", "x"], {"a", "b"}) == pytest.approx(1.0)
    assert ndcg_at_k(["x", "a"], {"a"}, k=1) == 0.0
    assert ndcg_at_k(["x", "a"], {"a"}, k=2) == pytest.approx(1 / LOG2_3)
    # more relevant ids than k: the ideal list is cut at k
    assert ndcg_at_k(["a"], {"a", "b", "c"}, k=2) == pytest.approx(1 / (1 + 1 / LOG2_3))
    assert ndcg_at_k(["a", "b"], {"a", "b", "c"}, k=2) == pytest.approx(1.0)


def test_recall_and_precision_hand_computed():
    ranked, relevant = ["a", "x", "b", "y"], {"a", "b", "c"}
    assert recall_at_k(ranked, relevant, k=2) == pytest.approx(1 / 3)
    assert recall_at_k(ranked, relevant, k=10) == pytest.approx(2 / 3)
    assert precision_at_k(ranked, relevant, k=2) == pytest.approx(1 / 2)
    # divides by k, not by the 4 ids returned
    assert precision_at_k(ranked, relevant, k=10) == pytest.approx(2 / 10)


def test_reciprocal_rank_hand_computed():
    assert reciprocal_rank(["x", "y", "a"], {"a"}) == pytest.approx(1 / 3)
    assert reciprocal_rank(["x", "y", "a"], {"a"}, k=2) == 0.0
    assert reciprocal_rank(["a", "b"], {"a", "b"}) == 1.0
    assert reciprocal_rank(["x", "y"], {"a"}) == 0.0


def test_duplicates_count_once_at_their_first_rank():
    # Three chunks of record x, then a: after dedupe a is at rank 2 and inside the top 2.
    ranked = ["x", "x", "x", "a", "a", "b"]
    assert reciprocal_rank(ranked, {"a"}) == pytest.approx(1 / 2)
    assert ndcg_at_k(ranked, {"a"}, k=2) == pytest.approx(1 / LOG2_3)
    assert recall_at_k(ranked, {"a", "b"}, k=2) == pytest.approx(1 / 2)
    assert precision_at_k(ranked, {"a", "b"}, k=3) == pytest.approx(2 / 3)
    # a relevant record repeated is not a second hit
    assert precision_at_k(["a", "a", "a"], {"a"}, k=3) == pytest.approx(1 / 3)
    assert ndcg_at_k(["a", "a"], {"a"}) == pytest.approx(1.0)


@pytest.mark.parametrize("metric", [ndcg_at_k, recall_at_k, precision_at_k, reciprocal_rank])
def test_empty_ranking_and_no_relevant_ids_score_zero(metric):
    assert metric([], {"a"}) == 0.0
    assert metric(["a", "b"], set()) == 0.0
    assert metric([], set()) == 0.0


@pytest.mark.parametrize("metric", [ndcg_at_k, recall_at_k, precision_at_k])
@pytest.mark.parametrize("bad_k", [0, -1, 2.5, True])
def test_bad_k_is_refused(metric, bad_k):
    with pytest.raises(ValueError, match="k must be a positive integer"):
        metric(["a"], {"a"}, k=bad_k)


def test_top_k_overlap_hand_computed():
    assert top_k_overlap(["a", "b", "c"], ["c", "d", "a"], k=3) == pytest.approx(2 / 3)
    assert top_k_overlap(["a", "b", "c", "d"], ["d", "c", "b", "a"], k=4) == 1.0  # order ignored
    assert top_k_overlap(["a", "b", "c"], ["a", "b", "c"], k=3) == 1.0
    assert top_k_overlap(["a", "b", "c"], ["x", "y", "z"], k=3) == 0.0
    assert top_k_overlap(["a", "b", "c"], ["a", "y", "b"], k=2) == pytest.approx(1 / 2)
    # divides by k: identical lists shorter than k score below 1, two empty lists 0
    assert top_k_overlap(["a", "b"], ["a", "b"], k=4) == pytest.approx(1 / 2)
    assert top_k_overlap([], [], k=3) == 0.0
    # duplicates: [a, a, b] is [a, b]
    assert top_k_overlap(["a", "a", "b"], ["b", "a"], k=2) == 1.0


def test_rbo_hand_computed():
    p = 0.9
    # A=[a,b,c], B=[a,c,b]: X_1 = 1, X_2 = 1, X_3 = 3; agreements 1, 1/2, 1.
    expected = (3 / 3) * p**3 + (1 - p) / p * (1 * p + 0.5 * p**2 + 1 * p**3)
    assert expected == pytest.approx(0.955)
    assert rank_biased_overlap(["a", "b", "c"], ["a", "c", "b"], p=p, k=3) == pytest.approx(expected)
    # cut at k = 2: X_1 = 1, X_2 = 1
    expected_k2 = (1 / 2) * p**2 + (1 - p) / p * (1 * p + 0.5 * p**2)
    assert rank_biased_overlap(["a", "b", "c"], ["a", "c", "b"], p=p, k=2) == pytest.approx(expected_k2)
    assert expected_k2 == pytest.approx(0.55)


def test_rbo_uneven_lists_hand_computed():
    # L=[a,b,c] (l = 3), S=[b] (s = 1), p = 1/2: X_1 = 0, X_2 = 1, X_3 = 1, X_s = 0.
    # (1-p)/p * (0 + 1/2 * 1/4 + 1/3 * 1/8) + ((1 - 0)/3 + 0) * 1/8 = 1/8 + 1/24 + 1/24 = 5/24
    assert rank_biased_overlap(["a", "b", "c"], ["b"], p=0.5, k=3) == pytest.approx(5 / 24)
    assert rank_biased_overlap(["b"], ["a", "b", "c"], p=0.5, k=3) == pytest.approx(5 / 24)
    # a prefix of the other list agrees completely so far, and RBO_ext extrapolates that agreement
    assert rank_biased_overlap(["a", "b", "c"], ["a"], p=0.5, k=3) == pytest.approx(1.0)


def test_rbo_identical_disjoint_empty_and_duplicates():
    ranking = [f"d{i}" for i in range(10)]
    assert rank_biased_overlap(ranking, list(ranking)) == pytest.approx(1.0)
    assert rank_biased_overlap(ranking, [f"e{i}" for i in range(10)]) == 0.0
    assert rank_biased_overlap(["a", "b"], ["a", "b"], k=10) == pytest.approx(1.0)
    assert rank_biased_overlap([], []) == 1.0
    assert rank_biased_overlap(["a"], []) == 0.0
    assert rank_biased_overlap([], ["a"]) == 0.0
    assert rank_biased_overlap(["a", "a", "b", "b", "c"], ["a", "b", "c"], k=3) == pytest.approx(1.0)
    # only the top k count: agreement below k is invisible
    assert rank_biased_overlap(["a", "x", "y"], ["a", "y", "x"], k=1) == pytest.approx(1.0)


def test_rbo_refuses_bad_persistence_and_depth():
    for p in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="persistence"):
            rank_biased_overlap(["a"], ["a"], p=p)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        rank_biased_overlap(["a"], ["a"], k=0)


def _rbo_ext_reference(a, b, p, k):
    """Webber et al. 2010, eq. 32, transcribed literally with prefix set intersections."""
    first, second = dedupe(a, k), dedupe(b, k)
    longer, shorter = (first, second) if len(first) >= len(second) else (second, first)
    l, s = len(longer), len(shorter)
    if s == 0:
        return 1.0 if l == 0 else 0.0

    def x(d):
        return len(set(longer[:d]) & set(shorter[:d]))

    total = sum(x(d) / d * p**d for d in range(1, l + 1))
    total += sum(x(s) * (d - s) / (s * d) * p**d for d in range(s + 1, l + 1))
    return (1 - p) / p * total + ((x(l) - x(s)) / l + x(s) / s) * p**l


rankings = st.lists(st.sampled_from("abcdefghijkl"), max_size=14)


@settings(max_examples=300, deadline=None)
@given(a=rankings, b=rankings, p=st.floats(0.05, 0.95), k=st.integers(1, 12))
def test_rbo_matches_the_paper_is_symmetric_and_bounded(a, b, p, k):
    score = rank_biased_overlap(a, b, p=p, k=k)
    assert 0.0 <= score <= 1.0
    assert score == pytest.approx(rank_biased_overlap(b, a, p=p, k=k), abs=1e-12)
    assert score == pytest.approx(_rbo_ext_reference(a, b, p, k), abs=1e-12)
    assert rank_biased_overlap(a, a, p=p, k=k) == pytest.approx(1.0)


@settings(max_examples=200, deadline=None)
@given(ranked=rankings, relevant=st.sets(st.sampled_from("abcdefghijkl")), k=st.integers(1, 12))
def test_metrics_stay_in_unit_interval(ranked, relevant, k):
    for value in (ndcg_at_k(ranked, relevant, k), recall_at_k(ranked, relevant, k),
                  precision_at_k(ranked, relevant, k), reciprocal_rank(ranked, relevant, k),
                  top_k_overlap(ranked, list(relevant), k)):
        assert 0.0 <= value <= 1.0 + 1e-12


def test_score_query_and_summarize():
    first = score_query("q1", ["a", "x", "b"], {"a", "b"}, k=3, reference=["a", "b", "x"])
    second = score_query("q2", ["x", "x", "c"], {"c"}, k=3, reference=["y", "z", "w"])
    assert first.reciprocal_rank == 1.0 and second.reciprocal_rank == pytest.approx(1 / 2)
    assert first.overlap == 1.0 and second.overlap == 0.0
    summary = summarize([first, second])
    assert summary["queries"] == 2.0
    assert summary["mrr@3"] == pytest.approx((1 + 1 / 2) / 2)
    assert summary["recall@3"] == pytest.approx(1.0)
    assert summary["precision@3"] == pytest.approx((2 / 3 + 1 / 3) / 2)
    assert summary["ndcg@3"] == pytest.approx((1.5 / (1 + 1 / LOG2_3) + 1 / LOG2_3) / 2)
    assert summary["overlap@3"] == pytest.approx(0.5)
    assert summary["rbo@3"] == pytest.approx((first.rbo + 0.0) / 2)
    assert set(summary) == {"queries", "ndcg@3", "recall@3", "precision@3", "mrr@3", "overlap@3", "rbo@3"}


def test_summarize_leaves_out_comparisons_that_were_not_made_and_refuses_mixtures():
    plain = score_query("q1", ["a"], {"a"}, k=10)
    assert "overlap@10" not in summarize([plain]) and "rbo@10" not in summarize([plain])
    compared = score_query("q2", ["a"], {"a"}, k=10, reference=["a"])
    with pytest.raises(ValueError, match="overlap is missing for 1 of 2 queries"):
        summarize([plain, compared])
    with pytest.raises(ValueError, match="different cut-offs"):
        summarize([plain, score_query("q3", ["a"], {"a"}, k=5)])
    with pytest.raises(ValueError, match="at least one"):
        summarize([])
    assert isinstance(plain, QueryScores)


def test_distance_recall_counts_exact_ties_as_hits():
    # Three rows share the k-th exact distance (one text repeated); the index returned another of
    # them than the exact scan did: still a full answer.
    exact = [0.10, 0.20, 0.30]
    assert distance_recall([0.10, 0.20, 0.30 + 5e-7], exact, k=3) == 1.0
    # A hit past the k-th distance by more than the tolerance is a miss.
    assert distance_recall([0.10, 0.20, 0.31], exact, k=3) == pytest.approx(2 / 3)
    # Only the first k found distances count, and a short answer is not rewarded.
    assert distance_recall([0.10], exact, k=3) == pytest.approx(1 / 3)
    assert distance_recall([0.05, 0.10, 0.20, 0.30], exact, k=3) == 1.0
    # Fewer rows in scope than k: judged against what exists.
    assert distance_recall([0.10, 0.20], [0.10, 0.20], k=10) == 1.0
    assert distance_recall([], [], k=10) == 1.0


def test_distance_recall_tolerance_is_tight():
    exact = [0.1] * 10
    assert distance_recall([0.1 + 2e-6] * 10, exact, k=10) == 0.0
    assert distance_recall([0.1 + 2e-6] * 10, exact, k=10, tolerance=1e-5) == 1.0
