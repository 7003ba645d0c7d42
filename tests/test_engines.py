"""The semantic engine seam: a third engine plugs in by registering itself, a version names it, and
the planner chooses it; pgvector and the JSONB scan are only its first two implementations."""

from __future__ import annotations

import numpy as np
import pytest
from psycopg.rows import class_row

from semindex import chunks, embeddings, lifecycle, raw_records, retained_size
from semindex.chunking import ChunkingParameters
from semindex.errors import InvalidInput
from semindex.search import PlannerSettings, Scope, Searcher, SearchRequest
from semindex.search.engine import Candidate, NearestRequest, PlanKind, ScannedRow, best
from semindex.search.engines import register_engine


class NumpyEngine:
    """A toy engine: reads every row the plan covers and ranks them exactly in numpy."""

    name = "numpy-toy"
    kinds = frozenset({PlanKind.ANN, PlanKind.GLOBAL})

    def serves(self, storage) -> bool:
        return True

    def label(self, kind: PlanKind) -> str:
        return f"numpy:{kind.value}"

    def nearest(self, db, request: NearestRequest) -> list[Candidate]:
        with db.connection() as conn:
            cursor = conn.cursor(row_factory=class_row(ScannedRow))
            rows = [row for query, params in request.target.scan_statements(request.plan)
                    for row in cursor.execute(query, params).fetchall()]
        kept, matrix = request.target.parse(rows)
        distances = request.target.metric.distances(matrix, request.query)
        return best([Candidate(r.key, r.record_key, r.field, float(d)) for r, d in zip(kept, distances)], request.limit)


@pytest.fixture
def two_versions(db, small_corpus):
    raw_records.ingest_file(db, small_corpus)
    chunks.sync_chunks(db, ChunkingParameters())
    register_engine(NumpyEngine())
    versions = {}
    for key, engine in (("on-pgvector", "pgvector"), ("on-numpy", "numpy-toy")):
        versions[key] = lifecycle.register_version(db, key, "hashing-48", 48, ann_engine=engine)
        embeddings.backfill(db, versions[key])
    retained_size.refresh_projection(db)
    return versions


@pytest.mark.parametrize("scope", [Scope(), Scope(connector_instance_ids=("bbc",)), Scope(streams=("messages", "sport"))])
def test_a_registered_engine_is_chosen_by_the_planner_and_answers_like_exact_search(db, two_versions, scope):
    # Every source large enough for a graph walk: the planner hands ANN plans to the version's engine.
    everywhere_ann = Searcher(db, planner=PlannerSettings(exact_threshold=0, min_ann_share=0.0))
    exact_only = Searcher(db, planner=PlannerSettings(exact_threshold=10**9))
    for text in ("football match results", "the budget and the election", "lol ok see you"):
        toy = everywhere_ann.search(SearchRequest(text, mode="semantic", k=10, scope=scope, version_key="on-numpy"))
        reference = exact_only.search(SearchRequest(text, mode="semantic", k=10, scope=scope, version_key="on-pgvector"))
        assert set(toy.meta.semantic_plans.values()) == {"numpy:global_ann" if scope.unrestricted else "numpy:ann"}
        assert set(reference.meta.semantic_plans.values()) <= {"exact", "global_ann"}
        assert len(toy.hits) == len(reference.hits) == 10
        np.testing.assert_allclose([h.distance for h in toy.hits], [h.distance for h in reference.hits], atol=1e-5)
        # The same chunks in the same order, except where two distances tie within float32 rounding
        # (numpy ranks in float64, pgvector in float32).
        for ours, theirs in zip(toy.hits, reference.hits, strict=True):
            assert ours.chunk_id == theirs.chunk_id or abs(ours.distance - theirs.distance) <= 1e-5


def test_a_version_naming_an_unknown_engine_is_refused(db):
    with pytest.raises(InvalidInput, match=r"ANN engine 'no-such-engine' is not one of .*pgvector"):
        lifecycle.register_version(db, "ghost", "hashing-16", 16, ann_engine="no-such-engine")
