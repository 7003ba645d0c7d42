"""The zvec substrate on a real PostgreSQL and real zvec: change capture, the builder (killed at
every phase, then rerun), horizons, freshness through the delta, no deleted row ever, readers
across a publish, and filtered search through the zvec plan at every selectivity."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading
import time
import uuid

import numpy as np
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from semindex import indexes, lifecycle
from semindex.ann_substrate import builder
from semindex.ann_substrate.generations import (
    VECTOR_FIELD,
    generation_path,
    generations,
    published,
    require_zvec,
)
from semindex.ann_substrate.recall import substrate_recall, substrate_status
from semindex.database import open_database
from semindex.errors import Unavailable
from semindex.search import PlannerSettings, Scope, Searcher, SearchRequest
from semindex.search.engine import NearestRequest, PlanKind, SemanticPlan
from semindex.search.engines import ZVEC
from semindex.search.version_target import VersionTable
from semindex.vectors.storage import PGVECTOR, as_array
from tests.conftest import scratch_database
from tests.synthetic_vectors import clustered_vectors, load_sources

KEY = "zvec-32"
# 10,000 rows: scopes of 0.1%, 1%, 10%, 50% and 100% are unions of the first sources.
SIZES = {("s1", "x"): 10, ("s2", "x"): 90, ("s3", "x"): 900, ("s4", "x"): 4000, ("s5", "x"): 5000}
SCOPES = {0.001: ("s1",), 0.01: ("s1", "s2"), 0.1: ("s1", "s2", "s3"), 0.5: ("s1", "s2", "s3", "s4"),
          1.0: ("s1", "s2", "s3", "s4", "s5")}


@pytest.fixture(scope="module")
def substrate(server_url, tmp_path_factory):
    home = tmp_path_factory.mktemp("zvec")
    os.environ["SEMINDEX_ZVEC_HOME"] = str(home)
    try:
        with scratch_database(server_url, "zv") as (url, db):
            yield _loaded(db, url, home)
    finally:
        os.environ.pop("SEMINDEX_ZVEC_HOME", None)


def _loaded(db, url, home) -> dict:
    version = lifecycle.register_version(db, KEY, "hashing-32", 32, ann_engine="zvec")
    loaded, centers = load_sources(db, version, SIZES)
    indexes.build_hnsw(db, version, indexes.HnswParameters())
    report = builder.build(db, version)
    assert report.full and report.documents == 10_000 and report.generation == 1
    assert substrate_recall(db, version).passed
    return {"db": db, "url": url, "version": version, "centers": centers, "home": home}


def _table(db, version) -> dict[int, np.ndarray]:
    with db.connection() as conn:
        return {row[0]: as_array(row[1]).astype(np.float32) for row in conn.execute(f"SELECT chunk_id, embedding FROM {version.vectors_table}")}


def _collection(version, generation: int) -> dict[int, np.ndarray]:
    zvec = require_zvec()
    collection = zvec.open(str(generation_path(version, generation)), zvec.CollectionOption(read_only=True))
    try:
        return {int(doc.id): np.asarray(doc.vector(VECTOR_FIELD), dtype=np.float32)
                for doc in collection.iter_docs(include_vector=True)}
    finally:
        collection.close()


def _assert_published_matches_table(db, version) -> int:
    current = published(db, version)
    table, stored = _table(db, version), _collection(version, current.generation)
    assert set(stored) == set(table)
    differing = [key for key in table if not np.array_equal(stored[key], table[key])]
    assert not differing, (len(differing), differing[:3], [(stored[k][:4], table[k][:4]) for k in differing[:2]])  # bit-identical float4
    return current.generation


def _nearest(db, version, query, *, sources=(), k=10):
    target = VersionTable(version, PGVECTOR, Scope())
    kind = PlanKind.ANN if sources else PlanKind.GLOBAL
    # The engine itself, on whatever generation is published (its recall gate is another test's).
    return ZVEC.nearest(db, NearestRequest(target, SemanticPlan(kind, ZVEC, tuple(sources)), np.asarray(query), k),
                        require_recall=False)


# Seeds for rows added by tests that run more than once (parametrized, hypothesis): one seed each,
# so no run adds another's vectors again. Piles of identical vectors trap a graph walk: the module's
# later recall checks measured 0.86-0.95 against 1.0 on the fixture's own data, at any ef.
_SEEDS = itertools.count(1000)


def _add_rows(db, version, count: int, rng) -> list[int]:
    """New records, chunks and vectors in source s5 (as the backfill would write them)."""
    tag = uuid.uuid4().hex[:8]
    with db.connection() as conn:
        conn.execute("""INSERT INTO semindex.raw_records (connector_id, connector_instance_id, stream, record_key, fields,
                                                          updated_at, content_sha256, chunked_sha256)
                        SELECT 'synthetic', 's5', 'x', %s || n, '{}', now(), sha256(convert_to(%s || n, 'UTF8')), sha256(convert_to(%s || n, 'UTF8'))
                        FROM generate_series(1, %s) AS n""", (f"new-{tag}-", tag, tag, count))
        rows = conn.execute("""INSERT INTO semindex.chunks (record_id, connector_id, connector_instance_id, stream, record_key, field,
                                                            chunk_no, content, content_sha256, semantic_key)
                               SELECT record_id, 'synthetic', 's5', 'x', record_key, 'text', 0, 'new', content_sha256,
                                      sha256(content_sha256 || '\\x01'::bytea)
                               FROM semindex.raw_records WHERE record_key LIKE %s ORDER BY record_id
                               RETURNING chunk_id, record_key, content_sha256""", (f"new-{tag}-%",)).fetchall()
        # Drawn like the loaded rows (load_sources' centers come from the same seed), so the data
        # stays clustered as real embeddings are: uniform random vectors would be a harder graph.
        vectors = clustered_vectors(rng, count, version.dimensions, np.random.default_rng(7).normal(size=(64, version.dimensions)))
        PGVECTOR.copy_version_rows(conn, version, ((chunk_id, "s5", "x", key, "text", sha, vector)
                                                   for (chunk_id, key, sha), vector in zip(rows, vectors)))
    return [row[0] for row in rows]


# ---- the engine ------------------------------------------------------------------------------------

def test_a_version_asking_for_zvec_without_the_extra_gets_a_clear_error(database_url, monkeypatch):
    monkeypatch.setitem(sys.modules, "zvec", None)  # as if the package were not installed
    with pytest.raises(Unavailable, match=r"pip install 'semindex\[zvec\]'"):
        lifecycle.register_version(open_database(database_url), "z", "hashing-8", 8, ann_engine="zvec")


@pytest.mark.parametrize("share", sorted(SCOPES))
def test_filtered_search_through_the_zvec_plan_returns_k_at_every_scope(substrate, share):
    db, version, centers = substrate["db"], substrate["version"], substrate["centers"]
    searcher = Searcher(db, planner=PlannerSettings(exact_threshold=0, min_ann_share=0))
    rng = np.random.default_rng(int(share * 1000))
    table = _table(db, version)
    with db.connection() as conn:
        source_of = dict(conn.execute(f"SELECT chunk_id, connector_instance_id FROM {version.vectors_table}").fetchall())
    keys = np.array(sorted(table))
    matrix = np.stack([table[key] for key in keys])
    allowed = np.array([source_of[key] in SCOPES[share] for key in keys])
    recalls, labels = [], set()
    for query in clustered_vectors(rng, 10, version.dimensions, centers):
        response = searcher.search(SearchRequest("unused", mode="semantic", k=10, scope=Scope(connector_instance_ids=SCOPES[share]), unit="chunks", version_key=KEY),
                                   vector=query)
        labels |= set(response.meta.semantic_plans.values())
        assert len(response.hits) == 10
        distances = np.where(allowed, 1 - matrix @ query / np.linalg.norm(matrix, axis=1) / np.linalg.norm(query), np.inf)
        kth = np.sort(distances)[9] + 1e-6
        recalls.append(sum(hit.distance <= kth for hit in response.hits) / 10)
    assert any(label.startswith("zvec") for label in labels), labels
    assert np.mean(recalls) >= 0.95, (share, np.mean(recalls), labels)


def test_a_row_written_after_the_build_is_found_at_once(substrate):
    db, version = substrate["db"], substrate["version"]
    (chunk_id,) = _add_rows(db, version, 1, np.random.default_rng(5))
    vector = _table(db, version)[chunk_id]
    found = _nearest(db, version, vector)
    assert found[0].key == chunk_id and found[0].distance < 1e-6


def test_the_plan_steps_aside_without_a_passed_recall_check_and_says_why(substrate):
    db, version = substrate["db"], substrate["version"]
    with db.connection() as conn:
        conn.execute("UPDATE semindex.ann_generations SET recall_passed = false WHERE version_id = %s AND state = 'published'",
                     (version.version_id,))
    try:
        searcher = Searcher(db, planner=PlannerSettings(exact_threshold=0, min_ann_share=0))
        time.sleep(2.1)  # the handle cache's TTL
        response = searcher.search(SearchRequest("x", mode="semantic", k=5, unit="chunks", version_key=KEY), vector=np.ones(32, dtype=np.float32))
        assert len(response.hits) == 5
        assert any("has not passed its recall check" in label for label in response.meta.semantic_plans.values()), response.meta
    finally:
        with db.connection() as conn:
            conn.execute("UPDATE semindex.ann_generations SET recall_passed = true WHERE version_id = %s AND state = 'published'",
                         (version.version_id,))
        time.sleep(2.1)


# ---- the builder: horizons, kills, readers ----------------------------------------------------------

BUILD = """
import sys
from semindex.ann_substrate.builder import build
from semindex.database import open_database
from semindex.vectors.version import get_version
db = open_database(sys.argv[1])
print(build(db, get_version(db, sys.argv[2])).generation)
"""


def _build_in_process(url: str, fault: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "SEMINDEX_ZVEC_FAULT": fault or ""}
    return subprocess.run([sys.executable, "-c", BUILD, url, KEY], env=env, capture_output=True, text=True, timeout=timeout)


def test_horizons_take_committed_transactions_only_and_only_move_forward(substrate):
    db, url, version = substrate["db"], substrate["url"], substrate["version"]
    rng = np.random.default_rng(21)
    for outcome in ("commit", "rollback"):
        before = published(db, version)
        long_running = psycopg.connect(url)  # T1: writes a vector row and stays open
        from pgvector.psycopg import register_vector

        register_vector(long_running)
        tag = uuid.uuid4().hex[:8]
        chunk = long_running.execute("""
            WITH r AS (INSERT INTO semindex.raw_records (connector_id, connector_instance_id, stream, record_key, fields, updated_at, content_sha256)
                       VALUES ('synthetic', 's5', 'x', %(k)s, '{}', now(), sha256(convert_to(%(k)s, 'UTF8'))) RETURNING record_id, content_sha256)
            INSERT INTO semindex.chunks (record_id, connector_id, connector_instance_id, stream, record_key, field, chunk_no, content, content_sha256, semantic_key)
            SELECT record_id, 'synthetic', 's5', 'x', %(k)s, 'text', 0, 't1', content_sha256, sha256(content_sha256 || '\\x02'::bytea) FROM r
            RETURNING chunk_id""", {"k": f"t1-{tag}"}).fetchone()[0]
        # Unit length, as an encoder writes it: zvec walks a cosine version by inner product, so one
        # long vector would crowd the top of many queries' candidates (recall 0.91-0.97 at any ef).
        vector = rng.normal(size=32).astype(np.float32)
        vector /= np.linalg.norm(vector)
        long_running.execute(f"INSERT INTO {version.vectors_table} (chunk_id, connector_instance_id, stream, record_key, field, content_sha256, embedding) "
                             "VALUES (%s, 's5', 'x', %s, 'text', '\\x00', %s)", (chunk, f"t1-{tag}", vector))
        (t2,) = _add_rows(db, version, 1, rng)  # T2: writes and commits while T1 is open
        report = builder.build(db, version)
        stored = _collection(version, report.generation)
        assert t2 in stored and chunk not in stored  # T2 taken, T1 never
        with db.connection() as conn:
            assert conn.execute("SELECT %s::xid8 >= %s::xid8", (report.horizon, before.horizon)).fetchone()[0]
        getattr(long_running, outcome)()
        long_running.close()
        after = builder.build(db, version)
        stored = _collection(version, after.generation)
        assert (chunk in stored) == (outcome == "commit")
        with db.connection() as conn:
            assert conn.execute("SELECT %s::xid8 >= %s::xid8", (after.horizon, report.horizon)).fetchone()[0]
        _assert_published_matches_table(db, version)
    with pytest.raises(Exception, match="below the published"):
        builder._publish(db, version, 999, "1", 0, 0.0, 0)  # a lower horizon is refused


@pytest.mark.parametrize("phase", [p for p in builder.PHASES if p != "cleanup"])
def test_a_builder_killed_at_any_phase_is_finished_by_the_next_run(substrate, phase):
    db, url, version = substrate["db"], substrate["url"], substrate["version"]
    _add_rows(db, version, 1500, np.random.default_rng(next(_SEEDS)))  # more than one upsert batch
    with db.connection() as conn:  # and more than one delete batch
        conn.execute("DELETE FROM semindex.chunks WHERE chunk_id IN (SELECT chunk_id FROM semindex.chunks "
                     "WHERE connector_instance_id = 's4' ORDER BY chunk_id DESC LIMIT 1100)")
    before = published(db, version)
    killed = _build_in_process(url, phase)
    assert killed.returncode == -9, killed.stderr[-2000:]
    current = published(db, version)
    if phase == "published":
        assert current.generation > before.generation  # the publish committed, then it died
    else:
        assert current.generation == before.generation  # nothing published
    rerun = _build_in_process(url)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    _assert_published_matches_table(db, version)
    leftovers = [path.name for path in (substrate["home"] / f"v{version.version_id}").iterdir()]
    assert not [name for name in leftovers if name.endswith(".tmp")], leftovers


READER = """
import sys, time
import numpy as np
from semindex.database import open_database
from semindex.search import PlannerSettings, Searcher, SearchRequest
db = open_database(sys.argv[1], bootstrap=False)
searcher = Searcher(db, planner=PlannerSettings(exact_threshold=0, min_ann_share=0))
rng = np.random.default_rng(0)
deadline = time.monotonic() + float(sys.argv[3])
answered = 0
while time.monotonic() < deadline:
    response = searcher.search(SearchRequest("q", mode="semantic", k=10, unit="chunks", version_key=sys.argv[2]),
                               vector=rng.normal(size=32).astype(np.float32))
    assert len(response.hits) == 10, response.meta
    answered += 1
print(answered, sorted(set(response.meta.semantic_plans.values())))
"""


def test_a_reader_keeps_answering_across_a_publish_and_holds_its_generation(substrate):
    db, url, version = substrate["db"], substrate["url"], substrate["version"]
    reader = subprocess.Popen([sys.executable, "-c", READER, url, KEY, "12"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(4)  # the reader has opened the published generation
    held = published(db, version).generation
    _add_rows(db, version, 10, np.random.default_rng(9))
    first = builder.build(db, version)
    assert f"g{held} kept: a reader holds it" in first.cleaned, first.cleaned
    assert generation_path(version, held).exists()
    out, err = reader.communicate(timeout=120)
    assert reader.returncode == 0, err[-2000:]
    assert int(out.split()[0]) > 10 and "zvec" in out
    second = builder.build(db, version)  # the reader is gone: its generation goes now
    assert not generation_path(version, held).exists()
    assert any(f"g{held} removed" in line for line in second.cleaned), second.cleaned


def test_a_builder_killed_during_clean_up_while_a_reader_holds_a_generation(substrate):
    db, url, version = substrate["db"], substrate["url"], substrate["version"]
    reader = subprocess.Popen([sys.executable, "-c", READER, url, KEY, "10"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(4)
    held = published(db, version).generation
    _add_rows(db, version, 5, np.random.default_rng(10))
    killed = _build_in_process(url, "cleanup")
    assert killed.returncode == -9
    assert generation_path(version, held).exists()  # still held, never deleted under a reader
    out, err = reader.communicate(timeout=120)
    assert reader.returncode == 0, err[-2000:]
    rerun = _build_in_process(url)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    _assert_published_matches_table(db, version)
    assert not generation_path(version, held).exists()


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(deletions=st.lists(st.integers(min_value=0, max_value=399), min_size=1, max_size=40, unique=True),
       tombstone=st.booleans())
def test_no_deleted_row_ever_comes_back(substrate, deletions, tombstone):
    """Search threads run on a generation that still holds rows being deleted: no hit ever names a
    chunk absent once its deletion committed."""
    db, version = substrate["db"], substrate["version"]
    fresh = _add_rows(db, version, 400, np.random.default_rng(next(_SEEDS)))  # not the deletions' count: see _SEEDS
    builder.build(db, version)  # the generation holds them
    victims = [fresh[n] for n in deletions]
    vectors = _table(db, version)
    deleted: set[int] = set()
    errors: list = []
    stop = threading.Event()

    def search():
        try:
            while not stop.is_set():
                for victim in victims:
                    seen_deleted = set(deleted)  # deletions committed before this search began
                    for candidate in _nearest(db, version, vectors[victim], k=5):
                        assert candidate.key not in seen_deleted, candidate
        except BaseException as error:  # reported by the main thread
            errors.append(error)

    threads = [threading.Thread(target=search) for _ in range(3)]
    for thread in threads:
        thread.start()
    with db.connection() as conn:
        if tombstone:  # the pipeline's way: the record's chunks go (cascading to the vectors)
            conn.execute("DELETE FROM semindex.chunks WHERE chunk_id = ANY(%s)", (victims,))
        else:
            conn.execute(f"DELETE FROM {version.vectors_table} WHERE chunk_id = ANY(%s)", (victims,))
    deleted.update(victims)
    time.sleep(0.5)
    stop.set()
    for thread in threads:
        thread.join()
    assert not errors, errors[0]
    for victim in victims:
        assert all(candidate.key != victim for candidate in _nearest(db, version, vectors[victim], k=5))


def test_status_and_retire(substrate, tmp_path):
    db, version = substrate["db"], substrate["version"]
    builder.build(db, version)
    assert substrate_status(db, version)["state"] == "built, recall not passed"
    assert substrate_recall(db, version).passed
    status = substrate_status(db, version)
    assert status["engine"] == "zvec" and status["state"] == "serving" and status["documents"] >= 10_000
    assert status["pending_changes"] >= 0 and status["disk_bytes"] > 0
    other = lifecycle.register_version(db, "zvec-retire", "hashing-32", 32, ann_engine="zvec")
    load_sources(db, other, {("retiring", "x"): 10})
    builder.build(db, other)
    assert published(db, other) is not None and generation_path(other, 1).exists()
    lifecycle.retire(db, "zvec-retire")
    assert published(db, other) is None and generations(db, other) == []
    assert not (substrate["home"] / f"v{other.version_id}").exists()
    with db.connection() as conn:
        assert conn.execute("SELECT count(*) FROM semindex.vector_changes WHERE version_id = %s", (other.version_id,)).fetchone()[0] == 0


# ---- the asset, its check, and the commands ---------------------------------------------------------

def test_the_asset_builds_and_its_blocking_check_passes(substrate):
    import dagster as dg

    from tests.dagster_helpers import check_verdicts, materialize_graph, metadata

    db, url, version = substrate["db"], substrate["url"], substrate["version"]
    _add_rows(db, version, 20, np.random.default_rng(31))
    before = published(db, version).generation
    with dg.instance_for_test() as instance:
        result = materialize_graph(instance, url, KEY, selection=dg.AssetSelection.assets("ann_substrate"))
    assert result.success and check_verdicts(result) == {"substrate_recall": True}
    facts = metadata(result, "ann_substrate")
    assert facts["generation"] == f"g{before + 1}" and facts["documents"] == published(db, version).documents
    assert facts["pending_changes"] == 0 and facts["build_seconds"] > 0 and facts["disk_bytes"] > 0
    assert isinstance(facts["horizon"], str)  # an id, as text: not plotted


def test_the_substrate_and_versions_commands(substrate, monkeypatch, capsys):
    from semindex_app.cli import main

    monkeypatch.setenv("DATABASE_URL", substrate["url"])
    assert main(["substrate", "build", KEY]) == 0
    out = capsys.readouterr().out
    assert "recall check: zvec g" in out and ">=" in out
    assert main(["substrate", "status", KEY]) == 0
    assert "zvec substrate: serving, g" in capsys.readouterr().out
    assert main(["versions", "list"]) == 0
    listing = capsys.readouterr().out
    assert "engine zvec" in listing and "zvec substrate: serving" in listing
    assert main(["substrate", "build", "no-such-version"]) == 2
