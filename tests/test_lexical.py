"""Lexical search ranks like a search engine: BM25 over record fields with statistics kept as records
change, web-search syntax with OR-ed words, one hit per record, a query parser nothing can crash."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import time
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from semindex import chunks, embeddings, indexes, lifecycle, raw_records, retained_size
from semindex.chunking import ChunkingParameters
from semindex.errors import InvalidInput
from semindex.search import Scope, Searcher, SearchRequest
from semindex.search.query import MAX_QUERY_CHARS, parse_query
from tests.conftest import sample_records, write_jsonl

VERSION = "lex-hash-32"


def _record(key: str, **fields) -> dict:
    return {"connector_id": "notes", "connector_instance_id": "notes", "stream": "pages", "record_key": key,
            "fields": fields, "updated_at": "2026-01-01T00:00:00Z"}


NOTES = [
    _record("a", title="apple pie recipe", body="bake the apple pie with cinnamon and butter"),
    _record("b", title="apple orchard", body="apple trees in the orchard; the apple harvest"),
    _record("c", title="banana bread", body="bread with banana and butter, no apple at all? apple"),
    _record("d", title="cherry tart", body="a tart of cherry and cream"),
    _record("e", title="world cup final", body="the world cup final ended in a draw after extra time"),
    _record("f", title="cup of tea", body="the world of tea: a cup a day"),
    _record("g", title="cricket world cup", body="the world cup of cricket"),
]


def _index(db, path) -> None:
    raw_records.ingest_file(db, path, force=True)
    chunks.sync_chunks(db, ChunkingParameters())
    indexes.lexical_stage(db)


@pytest.fixture
def notes_db(db, tmp_path):
    _index(db, write_jsonl(tmp_path / "notes.jsonl", NOTES))
    return db


def _statistics(db) -> tuple[dict, dict]:
    with db.connection() as conn:
        terms = {tuple(row[:3]): row[3] for row in conn.execute(
            "SELECT connector_instance_id, stream, lexeme, documents FROM semindex.lexical_terms WHERE documents <> 0")}
        sources = {tuple(row[:2]): tuple(row[2:]) for row in conn.execute(
            "SELECT connector_instance_id, stream, documents, tokens FROM semindex.lexical_sources WHERE documents <> 0")}
    return terms, sources


def _recomputed(db) -> tuple[dict, dict]:
    """The statistics computed from scratch over every lexical document."""
    with db.connection() as conn:
        terms = {tuple(row[:3]): row[3] for row in conn.execute(
            "SELECT d.connector_instance_id, d.stream, u.lexeme, count(*) FROM semindex.lexical_documents d, "
            "unnest(d.document) u GROUP BY 1, 2, 3")}
        sources = {tuple(row[:2]): tuple(row[2:]) for row in conn.execute(
            "SELECT connector_instance_id, stream, count(*), sum(token_count) FROM semindex.lexical_documents GROUP BY 1, 2")}
    return terms, sources


def test_term_statistics_follow_every_write_and_cost_only_what_changed(db, tmp_path):
    corpus = sample_records(per_stream=6) + NOTES
    _index(db, write_jsonl(tmp_path / "first.jsonl", corpus))
    assert _statistics(db) == _recomputed(db)
    terms, sources = _statistics(db)
    assert sources[("notes", "pages")] == (14, sum(len(re.findall(r"\w+", t)) for r in NOTES for t in r["fields"].values()))
    assert terms[("notes", "pages", "apple")] == 5  # a.title, a.body, b.title, b.body, c.body

    # An edit, a deletion and a new record: the statistics move by exactly those documents.
    edited = [_record("a", title="plum pie recipe", body="bake the plum pie"), {**NOTES[1], "deleted": True},
              _record("h", title="apple crumble")]
    with db.connection() as conn:
        before = conn.execute("SELECT count(*) FROM semindex.lexical_documents").fetchone()[0]
    _index(db, write_jsonl(tmp_path / "second.jsonl", edited))
    assert _statistics(db) == _recomputed(db)
    terms, sources = _statistics(db)
    assert terms[("notes", "pages", "apple")] == 2  # c.body and h.title are left
    assert terms.get(("notes", "pages", "plum")) == 2 and ("notes", "pages", "orchard") not in terms
    with db.connection() as conn:
        assert conn.execute("SELECT count(*) FROM semindex.lexical_documents").fetchone()[0] == before - 2 + 1


def _bm25(query_terms: list[str], documents: dict[tuple[str, str], list[str]], k1=1.2, b=0.75) -> dict[tuple, float]:
    """BM25 (Lucene's idf) over word-token documents, as the reference."""
    n = len(documents)
    average = sum(len(tokens) for tokens in documents.values()) / n
    frequency = Counter(term for tokens in documents.values() for term in set(tokens))
    scores = {}
    for name, tokens in documents.items():
        counts = Counter(tokens)
        score = sum(
            math.log(1 + (n - frequency[t] + 0.5) / (frequency[t] + 0.5))
            * counts[t] * (k1 + 1) / (counts[t] + k1 * (1 - b + b * len(tokens) / average))
            for t in set(query_terms) if counts[t]
        )
        if score:
            scores[name] = score
    return scores


def test_scores_are_bm25_over_fields_and_a_record_scores_its_best_field(notes_db):
    documents = {(r["record_key"], name): re.findall(r"\w+", text.lower()) for r in NOTES for name, text in r["fields"].items()}
    response = Searcher(notes_db).search(SearchRequest("apple butter", mode="lexical", k=10))
    expected = _bm25(["apple", "butter"], documents)
    best = {}
    for (record, field), score in expected.items():
        best[record] = max(best.get(record, 0.0), score)
    assert [hit.record_key for hit in response.hits] == sorted(best, key=lambda record: -best[record])
    for hit in response.hits:
        assert hit.scores["lexical"] == pytest.approx(best[hit.record_key], rel=1e-9)
        assert hit.matched_fields == sorted((f for (r, f) in expected if r == hit.record_key),
                                            key=lambda f: -expected[(hit.record_key, f)])
    assert response.meta.lexical.ranking == "complete" and response.meta.lexical.matched == len(expected)


def test_plain_words_are_ored_phrases_required_minus_excluded(notes_db):
    searcher = Searcher(notes_db)

    def keys(query: str) -> list[str]:
        return [hit.record_key for hit in searcher.search(SearchRequest(query, mode="lexical", k=10)).hits]

    # OR: a record holding only one of the words still comes back; one holding both ranks first.
    assert set(keys("cherry orchard")) == {"b", "d"}
    assert keys("world cup")[0] in {"e", "g"} and "f" in keys("world cup")
    assert set(keys('"world cup"')) == {"e", "g"}  # the phrase, in order
    assert set(keys('"world cup" -cricket')) == {"e"}
    assert set(keys('"cherry tart" OR "banana bread"')) == {"c", "d"}
    assert set(keys("apple -pie")) == {"b", "c"}
    # A dash run, quotes left open, symbols: text, not operators.
    assert set(keys("cherry " + "-" * 400 + ' "tart')) == {"d"}


def test_every_mode_gives_k_distinct_records_and_chunks_on_request(db, tmp_path):
    long_body = " ".join(f"football match report {i} with goals and saves" for i in range(120))  # many chunks
    corpus = [_record(f"r{i}", body=long_body, title=f"football {i}") for i in range(12)]
    _index(db, write_jsonl(tmp_path / "long.jsonl", corpus))
    version = lifecycle.register_version(db, VERSION, "hashing-32", 32)
    embeddings.backfill(db, version)
    retained_size.refresh_projection(db)
    searcher = Searcher(db)
    for mode in ("lexical", "semantic", "hybrid"):
        hits = searcher.search(SearchRequest("football match goals", mode=mode, k=10, version_key=VERSION)).hits
        assert len(hits) == 10 and len({hit.record for hit in hits}) == 10, mode
        passages = searcher.search(SearchRequest("football match goals", mode=mode, k=10, version_key=VERSION,
                                                 unit="chunks")).hits
        assert len(passages) == 10 and len({hit.record for hit in passages}) < 10, mode  # several chunks of a record


def test_the_dash_query_returns_hits_and_the_cli_prints_one_line_for_bad_input(notes_db, database_url, semindex_home):
    dashes = "apple pie " + "-" * 64
    assert Searcher(notes_db).search(SearchRequest(dashes, mode="lexical", k=5)).hits
    env = {"DATABASE_URL": database_url, "SEMINDEX_HOME": str(semindex_home), "PATH": "/usr/bin:/bin"}
    found = subprocess.run([sys.executable, "-m", "semindex_app.cli", "search", dashes, "--mode", "lexical", "--json"],
                           capture_output=True, text=True, timeout=120, env=env)
    assert found.returncode == 0 and json.loads(found.stdout)["hits"], found.stderr
    for bad in ("-" * 40, "x" * (MAX_QUERY_CHARS + 1)):
        refused = subprocess.run([sys.executable, "-m", "semindex_app.cli", "search", "--mode", "lexical", "--", bad],
                                 capture_output=True, text=True, timeout=120, env=env)
        assert refused.returncode == 2 and "Traceback" not in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1 and refused.stderr.startswith("semindex search: ")


@pytest.fixture(scope="module")
def property_db(tmp_path_factory, server_url):
    """One database for every generated query (hypothesis reruns the test body many times)."""
    import uuid

    import psycopg

    from semindex.database import Database
    from tests.conftest import _database_url

    name = f"t_props_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    db = Database(_database_url(server_url, name))
    path = tmp_path_factory.mktemp("props") / "notes.jsonl"
    _index(db, write_jsonl(path, NOTES + sample_records(per_stream=3)))
    version = lifecycle.register_version(db, VERSION, "hashing-32", 32)
    embeddings.backfill(db, version)
    retained_size.refresh_projection(db)
    yield db
    db.close()
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


QUERIES = st.one_of(
    st.text(max_size=200),
    st.text(alphabet=st.characters(blacklist_categories=()), max_size=50),  # NUL, lone surrogates, controls
    st.text(alphabet=st.sampled_from('-"\'()|!&:*<>\\ ~^+'), max_size=300),
    st.builds(lambda n, word: word + " " + "-" * n, st.integers(0, 5000), st.sampled_from(["apple", "world cup", ""])),
    st.builds(lambda n: '"' * n, st.integers(1, 3000)),
    st.builds(lambda n, text: (text * (10_000 // max(1, len(text))))[:n], st.integers(1, 10_000), st.text(min_size=1, max_size=20)),
    st.lists(st.sampled_from(["apple", "OR", "-pie", '"world', 'cup"', "-", "--", "or", "|", "!", "-\"x y\""]),
             max_size=80).map(" ".join),
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(query=QUERIES)
def test_no_query_string_makes_any_mode_raise_anything_but_the_documented_input_error(property_db, query):
    searcher = Searcher(property_db)
    for mode in ("lexical", "semantic", "hybrid"):
        try:
            response = searcher.search(SearchRequest(query, mode=mode, k=5, version_key=VERSION))
        except InvalidInput as error:
            assert re.search(r"empty|no word to search|characters long|distinct terms", str(error)), str(error)
        else:
            assert len({hit.record for hit in response.hits}) == len(response.hits) <= 5
            if mode == "lexical":
                assert parse_query(query).searchable


def test_a_database_chunked_before_lexical_documents_gets_them_once(notes_db):
    # As an earlier semindex left it: chunks, but no lexical documents or statistics.
    with notes_db.connection() as conn:
        conn.execute("TRUNCATE semindex.lexical_documents, semindex.lexical_terms, semindex.lexical_sources")
        conn.execute("UPDATE semindex.lexical_backfill SET watermark = 0, done = false")
    report = indexes.lexical_stage(notes_db)
    assert report.details["records_backfilled"] == len(NOTES) and report.row_count == 14
    assert _statistics(notes_db) == _recomputed(notes_db)
    assert indexes.lexical_stage(notes_db).details["records_backfilled"] == 0  # done once
    hits = Searcher(notes_db).search(SearchRequest("cherry", mode="lexical", k=5, scope=Scope(streams=("pages",)))).hits
    assert [hit.record_key for hit in hits] == ["d"]


def test_a_field_scope_whose_term_floods_the_window_reads_only_that_fields_documents(db, tmp_path):
    # 6,000 bodies and 60 quotes say "the": far more matches than the window, so the ranking takes the
    # first matches in index order. Through the field index it reads the quotes only.
    corpus = [_record(f"r{i:05d}", body=f"the body number {i} of the sample") for i in range(6000)]
    corpus += [_record(f"q{i:03d}", quote=f"the quote {i} that someone said") for i in range(60)]
    _index(db, write_jsonl(tmp_path / "flood.jsonl", corpus))
    with db.autocommit_connection() as conn:
        conn.execute("ANALYZE semindex.lexical_documents")

    def field_index_scans() -> int:
        with db.connection() as conn:
            conn.execute("SELECT pg_stat_force_next_flush()")
            return conn.execute("SELECT idx_scan FROM pg_stat_user_indexes "
                                "WHERE indexrelname = 'lexical_documents_field'").fetchone()[0]

    before = field_index_scans()
    result = Searcher(db).lexical.search(SearchRequest("the", mode="lexical", k=10, lexical_window=100,
                                                       scope=Scope(fields=("quote",))))
    assert result.meta.ranking == "truncated"
    assert len(result.hits) == 10 and {hit.field for hit in result.hits} == {"quote"}
    # The searching backend reports its index scans within a second or so of going idle.
    deadline = time.monotonic() + 15
    while field_index_scans() == before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert field_index_scans() > before


def test_a_scope_of_several_sources_ranks_one_windows_worth_in_all(db, tmp_path):
    # Three sources of 100 records each say "the": each floods a window of 60, so each is ranked
    # truncated. Together they sample 60 documents, 20 from each, as one flooded source samples 60.
    # 25 of each source's records also say "rare": each source's own 25 would fit the window, the
    # scope's 75 do not, so the scope's decision is a truncated sample of 60 there too.
    corpus = [{**_record(f"{source}-{i:03d}", body=f"the note {i} of {source}" + (" rare" if i < 25 else "")),
               "connector_instance_id": source}
              for source in ("north", "south", "west") for i in range(100)]
    _index(db, write_jsonl(tmp_path / "three.jsonl", corpus))
    searcher = Searcher(db)

    def search(*instances):
        return searcher.lexical.search(SearchRequest("the", mode="lexical", k=10, lexical_window=60,
                                                     scope=Scope(connector_instance_ids=instances)))

    one, three = search("north"), search("north", "south", "west")
    assert one.meta.ranking == three.meta.ranking == "truncated"
    assert one.meta.matched == three.meta.matched == 60
    assert len(three.hits) == 10 and three.meta.windowed_sources == ["north/pages", "south/pages", "west/pages"]
    rare = searcher.lexical.search(SearchRequest("rare the", mode="lexical", k=10, lexical_window=60,
                                                 scope=Scope(connector_instance_ids=("north", "south", "west"))))
    assert rare.meta.ranking == "truncated" and rare.meta.matched == 60
    assert len(rare.hits) == 10


def test_a_scope_of_record_keys_reads_their_documents_not_the_terms_matches(db, tmp_path):
    # 3,000 bodies say "the"; a scope of 40 of those records is fewer keys than the term's matches,
    # so their documents are read through the keys' btree and each tested, not through a bitmap of
    # the term's 3,000 matches. Only the best records come back; every match is still counted.
    corpus = [_record(f"r{i:05d}", body=f"the body number {i}" + " the" * (i % 7)) for i in range(3000)]
    _index(db, write_jsonl(tmp_path / "keys.jsonl", corpus))
    with db.autocommit_connection() as conn:
        conn.execute("ANALYZE semindex.lexical_documents")
    keys = tuple(f"r{i:05d}" for i in range(0, 3000, 75))

    def index_scans() -> dict[str, int]:
        with db.connection() as conn:
            conn.execute("SELECT pg_stat_force_next_flush()")
            return dict(conn.execute("SELECT indexrelname, idx_scan FROM pg_stat_user_indexes WHERE indexrelname IN "
                                     "('lexical_documents_record_key', 'lexical_documents_scope_gin')").fetchall())

    before = index_scans()
    result = Searcher(db).lexical.search(SearchRequest("the", mode="lexical", k=10, scope=Scope(record_keys=keys)))
    assert result.meta.ranking == "exact" and result.meta.matched == result.meta.matched_records == len(keys)
    assert len(result.hits) == 10 and {hit.record_key for hit in result.hits} <= set(keys)
    # BM25 of one term in documents alike but for its repeats: the more repeats, the higher; ties in key order.
    assert [hit.record_key for hit in result.hits] == sorted(keys, key=lambda key: (-(int(key[1:]) % 7), key))[:10]
    deadline = time.monotonic() + 15  # the backend reports its index scans a second or so after going idle
    while index_scans()["lexical_documents_record_key"] == before["lexical_documents_record_key"] and time.monotonic() < deadline:
        time.sleep(0.2)
    after = index_scans()
    assert after["lexical_documents_record_key"] > before["lexical_documents_record_key"]
    assert after["lexical_documents_scope_gin"] == before["lexical_documents_scope_gin"]
