"""Live shadow traffic: `semindex serve` mirrors sampled semantic and hybrid queries to a candidate
version after answering, stores their overlap with what it served, and the figures reach
`semindex versions list` and the evaluation's shadow comparison; the mirror never blocks."""

from __future__ import annotations

import contextlib
import hashlib
import re
import threading
import time
import types

from semindex import embeddings, indexes, lifecycle, relevance_metrics
from semindex.evaluation import shadow_comparison
from semindex.search import Searcher, SearchRequest
from semindex.shadow_traffic import ShadowMirror, ShadowSettings, live_traffic
from semindex_app.cli import main
from tests.http_service import (
    drop_database,
    indexed_database,
    owner_token,
    running_service,
)

CANDIDATE = "hash-32"
QUERIES = ["football match", "the election campaign", "new mobile phones", "film awards", "how are you doing",
           "interest rates rise", "music album", "government budget", "rugby", "a quiet evening"]


def test_live_queries_are_mirrored_to_the_candidate_and_reported(server_url, tmp_path, monkeypatch, capsys):
    url, db = indexed_database(server_url, tmp_path, per_stream=8)
    try:
        candidate = lifecycle.register_version(db, CANDIDATE, "hashing-32", 32)
        embeddings.backfill(db, candidate)
        indexes.build_hnsw(db, candidate, indexes.HnswParameters())
        token = owner_token(db)
        env = {"SEMINDEX_SHADOW_DATABASE_URL": url, "SEMINDEX_SHADOW_SAMPLE_RATE": "1"}
        with running_service(url, tmp_path / "home", extra_env=env) as service, service.client(token) as client:
            served = {}
            for query in QUERIES:
                for mode, route in (("semantic", "/v1/search/semantic"), ("hybrid", "/v1/search/hybrid")):
                    body = client.get(route, params={"q": query, "limit": 10}).json()
                    served[(mode, query)] = [(h["connection_id"], h["stream"], h["record_key"]) for h in body["data"]]
                assert client.get("/v1/search", params={"q": query}).status_code == 200  # lexical: not mirrored
            deadline = time.monotonic() + 60
            while True:
                live = live_traffic(db, CANDIDATE)
                if {mode: figures["queries"] for mode, figures in live.items()} == {"semantic": 10, "hybrid": 10}:
                    break
                assert time.monotonic() < deadline, (live, service.log())
                time.sleep(0.5)
            metrics = client.get("/metrics").text
            assert re.search(r'semindex_shadow_queries_total\{event="recorded"\} 20\.0', metrics), metrics
        # Each stored figure is the overlap of what was served with the candidate's own answer.
        searcher = Searcher(db)
        with db.connection() as conn:
            rows = conn.execute("SELECT mode, query_sha256, overlap_at_10, rbo_at_10 FROM semindex.shadow_observations").fetchall()
        by_hash = {hashlib.sha256(q.encode()).digest(): q for q in QUERIES}
        for mode, digest, overlap, rbo in rows:
            query = by_hash[bytes(digest)]
            ours = [h.record for h in searcher.search(SearchRequest(query, mode=mode, k=10, version_key=CANDIDATE)).hits]
            assert overlap == relevance_metrics.top_k_overlap(ours, served[(mode, query)], 10)
            assert rbo == relevance_metrics.rank_biased_overlap(ours, served[(mode, query)], k=10)
        assert 0 < live["semantic"]["overlap@10"] < 1  # two different encoders: related, not equal

        monkeypatch.setenv("DATABASE_URL", url)
        assert main(["versions", "list"]) == 0
        listing = capsys.readouterr().out
        assert re.search(r"live semantic traffic vs the serving version: 10 queries, top-10 overlap 0\.\d+", listing), listing
        shadow = shadow_comparison(db, candidate, [], {}, {}, {}, [])
        assert shadow["live_traffic"] == live and "live traffic: hybrid 10 queries" in shadow["summary"]
    finally:
        drop_database(server_url, url)


def test_the_mirror_never_blocks_and_drops_when_its_queue_is_full():
    release = threading.Event()
    searched = []

    def slow_search(request):
        release.wait(10)
        searched.append(request)
        return []

    events = []
    writer = _Writer()
    mirror = ShadowMirror(slow_search, reader=_NoCandidates(), writer=writer, settings=ShadowSettings(sample_rate=1, queue_size=2),
                          on_event=events.append)
    mirror._candidates = (time.monotonic(), ["candidate"])
    started = time.perf_counter()
    offered = [mirror.offer(SearchRequest(f"query {n}", mode="semantic"), [], "serving") for n in range(6)]
    assert time.perf_counter() - started < 0.05  # six offers, no waiting on the slow search
    assert offered.count(False) >= 3 and events.count("dropped") == offered.count(False)
    assert not mirror.offer(SearchRequest("lexical", mode="lexical"), [], "serving")  # not a mirrored mode
    assert not mirror.offer(SearchRequest("shadow", mode="semantic", version_key="x"), [], "serving")  # already a shadow query
    release.set()
    mirror.join()
    mirror.close()
    assert events.count("recorded") == offered.count(True) == writer.batches


class _NoCandidates:
    """A reader that is never asked (the candidate list is preset)."""


class _Writer:
    """Counts the observation batches the mirror stores (their SQL is tested on PostgreSQL above)."""

    def __init__(self) -> None:
        self.batches = 0

    @contextlib.contextmanager
    def connection(self):
        self.batches += 1
        yield self

    def execute(self, *args, **kwargs):
        return types.SimpleNamespace(rowcount=1)
