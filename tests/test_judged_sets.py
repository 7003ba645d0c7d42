"""The shipped judged query sets: they load, agree with their files, every label points at a real
record, the Semanlink tags are valid raw records, and the build reproduces the committed bytes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from semindex.builders.judged_sets import GENERATED_FILES, build
from semindex.data import JUDGED_DIR
from semindex.judged_sets import (
    BBC_SET,
    SEMANLINK_SET,
    SETS_FILE,
    JudgedSet,
    judged_document_paths,
    load_judged_sets,
)
from semindex.raw_records import ingest_file, parse_record
from semindex.data import SAMPLE_CORPUS_PATH
from semindex.search import Scope

MAX_FIELD_BYTES = 2 * 1024 * 1024


def _jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


@pytest.fixture(scope="module")
def judged_sets() -> dict[str, JudgedSet]:
    return {judged_set.name: judged_set for judged_set in load_judged_sets()}


@pytest.fixture(scope="module")
def set_descriptions() -> dict[str, dict]:
    return {entry["name"]: entry for entry in json.loads((JUDGED_DIR / SETS_FILE).read_text(encoding="utf-8"))}


def test_both_sets_load_with_counts_that_match_the_files(judged_sets, set_descriptions):
    assert list(judged_sets) == [SEMANLINK_SET, BBC_SET]
    query_lines = _jsonl(JUDGED_DIR / "queries.jsonl")
    for name, judged_set in judged_sets.items():
        counts = set_descriptions[name]["counts"]
        lines = [line for line in query_lines if line["set"] == name]
        assert len(judged_set.queries) == len(lines) == counts["queries"]
        assert sum(len(query.relevant) for query in judged_set.queries) == counts["relevance_pairs"]
        assert [query.query_id for query in judged_set.queries] == [line["query_id"] for line in lines]
        assert len({query.query_id for query in judged_set.queries}) == len(judged_set.queries)
        assert all(query.text.strip() and query.relevant for query in judged_set.queries)
    # the figures the README states
    assert set_descriptions[SEMANLINK_SET]["counts"] == {"queries": 313, "documents": 432, "relevance_pairs": 1001}
    assert set_descriptions[BBC_SET]["counts"] == {"queries": 200, "documents": 600, "relevance_pairs": 207}


def test_unknown_set_is_named_in_the_error():
    with pytest.raises(ValueError, match="'no-such-set'"):
        load_judged_sets(["no-such-set", BBC_SET])
    (only,) = load_judged_sets([BBC_SET])
    assert only.name == BBC_SET
    (only,) = load_judged_sets(SEMANLINK_SET)  # a bare name is one set, not its characters
    assert only.name == SEMANLINK_SET


def test_bbc_labels_point_at_bodies_in_the_sample_corpus(judged_sets, set_descriptions):
    bbc = judged_sets[BBC_SET]
    assert bbc.documents_path is None
    articles = {
        record["record_key"]: record
        for record in _jsonl(SAMPLE_CORPUS_PATH)
        if record["connector_instance_id"] == "bbc"
    }
    assert len(articles) == set_descriptions[BBC_SET]["counts"]["documents"]
    assert bbc.scope == {
        "connector_instance_id": ("bbc",),
        "stream": ("business", "entertainment", "politics", "sport", "tech"),
        "field": ("body",),
    }
    per_stream: dict[str, int] = {}
    for query in bbc.queries:
        key = query.query_id.removeprefix("bbc:")
        assert key in query.relevant, query  # the query's own article is always relevant
        assert query.text == " ".join(articles[key]["fields"]["headline"].split())
        bodies = {" ".join(articles[relevant]["fields"]["body"].split()) for relevant in query.relevant}
        assert len(bodies) == 1, query  # extra relevant ids are exact duplicates of the article
        assert all(articles[relevant]["stream"] in bbc.scope["stream"] for relevant in query.relevant)
        per_stream[articles[key]["stream"]] = per_stream.get(articles[key]["stream"], 0) + 1
    assert per_stream == dict.fromkeys(bbc.scope["stream"], 40)


def test_semanlink_labels_point_at_valid_tag_records(judged_sets, set_descriptions):
    semanlink = judged_sets[SEMANLINK_SET]
    assert semanlink.documents_path == JUDGED_DIR / "semanlink_tags.jsonl"
    with semanlink.documents_path.open(encoding="utf-8") as handle:
        records = [parse_record(line, max_field_bytes=MAX_FIELD_BYTES) for line in handle]
    assert len(records) == set_descriptions[SEMANLINK_SET]["counts"]["documents"]
    keys = {record.record_key for record in records}
    assert len(keys) == len(records)
    for record in records:
        assert (record.connector_id, record.connector_instance_id, record.stream) == ("semanlink", "semanlink", "tags")
        assert not record.deleted and record.fields.get("label", "").strip()
        assert set(record.fields) <= set(semanlink.scope["field"])
        assert all(value.strip() for value in record.fields.values())
    relevant = set().union(*(query.relevant for query in semanlink.queries))
    assert relevant <= keys
    assert relevant == keys  # every tag shipped is the answer to some query
    assert "arxiv_doc" not in keys  # the tag on every paper was dropped


def test_document_paths_and_search_scope(judged_sets):
    assert judged_document_paths() == [JUDGED_DIR / "semanlink_tags.jsonl", SAMPLE_CORPUS_PATH]
    assert judged_document_paths([BBC_SET]) == [SAMPLE_CORPUS_PATH]
    assert all(path.is_file() for path in judged_document_paths())
    assert judged_sets[BBC_SET].search_scope() == Scope(
        connector_instance_ids=("bbc",),
        streams=("business", "entertainment", "politics", "sport", "tech"),
        fields=("body",),
    )


def test_semanlink_tags_ingest_without_quarantine(db):
    report = ingest_file(db, JUDGED_DIR / "semanlink_tags.jsonl")
    assert (report.lines, report.inserted, report.quarantined) == (432, 432, 0)


def test_build_is_deterministic_and_matches_the_committed_files(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    counts = build(first)
    build(second)
    assert counts[SEMANLINK_SET]["papers"] == 314
    assert counts[SEMANLINK_SET]["tags_used"] == 433
    assert counts[SEMANLINK_SET]["tags_on_every_paper"] == 1
    for name in GENERATED_FILES:
        committed = (JUDGED_DIR / name).read_bytes()
        assert (first / name).read_bytes() == (second / name).read_bytes() == committed, name
    assert sorted(path.name for path in first.iterdir()) == sorted(GENERATED_FILES)
