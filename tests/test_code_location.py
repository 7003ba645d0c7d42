"""The code location loads, the CLI works end to end, and Dagster stores its runs in PostgreSQL."""

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psycopg

from semindex.database import Database, open_database
from semindex.embeddings import backfill
from semindex.lifecycle import register_version
from tests.conftest import sample_records, write_jsonl
from tests.serving import serve

PROJECT = Path(__file__).resolve().parent.parent
SEMINDEX = [sys.executable, "-m", "semindex_app.cli"]


def _env(semindex_home):
    return {**os.environ, "SEMINDEX_HOME": str(semindex_home), "PYTHONPATH": str(PROJECT)}


def test_definitions_load_without_importing_the_model_or_pandas():
    # No DAGSTER_HOME: an earlier test's instance (pointing at its since-dropped database) must not leak in.
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    result = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=PROJECT, capture_output=True, text=True, timeout=180, env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    probe = subprocess.run(
        [sys.executable, "-c", "import sys, semindex_app.definitions; "
         "print(*(name in sys.modules for name in ('sentence_transformers', 'torch', 'pandas')))"],
        cwd=PROJECT, capture_output=True, text=True, timeout=120,
    )
    assert probe.stdout.split() == ["False", "False", "False"], probe.stderr


def test_bootstrap_is_idempotent(database_url):
    first = Database(database_url)
    first.close()
    second = Database(database_url)  # bootstraps the existing schema again
    with second.connection() as conn:
        assert conn.execute("SELECT count(*) FROM semindex.embedding_versions").fetchone()[0] == 0
    second.close()


def test_every_verb_has_help():
    for verb in (["run"], ["dev"], ["db", "url"], ["ingest"], ["search"], ["versions"], *(
        ["versions", v] for v in ("list", "register", "backfill", "promote", "rollback", "retire")
    )):
        result = subprocess.run([*SEMINDEX, *verb, "--help"], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0 and "usage: semindex" in result.stdout


def test_db_url_prints_the_embedded_server_url(semindex_home, server_url):
    env = {k: v for k, v in _env(semindex_home).items() if k != "DATABASE_URL"}
    url = subprocess.run([*SEMINDEX, "db", "url"], env=env, capture_output=True, text=True, timeout=60)
    assert url.returncode == 0 and url.stdout.strip() == server_url


def test_cli_ingest_runs_through_dagster_on_postgres_storage_then_search(semindex_home, database_url, tmp_path):
    # DATABASE_URL points the CLI at this test's own database, as it would at any external server.
    env = {**_env(semindex_home), "DATABASE_URL": database_url}
    url = subprocess.run([*SEMINDEX, "db", "url"], env=env, capture_output=True, text=True, timeout=60)
    assert url.stdout.strip() == database_url

    corpus = write_jsonl(tmp_path / "in.jsonl", [*sample_records(per_stream=3), "{broken"])
    ingest = subprocess.run([*SEMINDEX, "ingest", str(corpus)], env=env, capture_output=True, text=True, timeout=180)
    assert ingest.returncode == 0, ingest.stderr[-3000:]
    assert json.loads(ingest.stdout.strip().splitlines()[-1]) == {
        "rows_added": 21, "rows_changed": 0, "rows_removed": 0, "unchanged": 0, "quarantined": 1,
    }
    # The run was recorded by dagster-postgres in the same database.
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM runs WHERE status = 'SUCCESS'").fetchone()[0] == 1

    db = open_database(database_url)
    from semindex.chunks import sync_chunks
    from semindex.chunking import ChunkingParameters

    sync_chunks(db, ChunkingParameters())
    backfill(db, register_version(db, "cli-tiny", "hashing-64", 64))
    serve(db, "cli-tiny")
    search = subprocess.run([*SEMINDEX, "search", "BBC news", "--mode", "semantic", "--k", "3", "--json",
                             "--connector-instance", "bbc"],
                            env=env, capture_output=True, text=True, timeout=60)
    assert search.returncode == 0, search.stderr
    response = json.loads(search.stdout)
    hits = response["hits"]
    assert len(hits) == 3 and {"connector_instance_id", "stream", "record_key", "snippet", "scores", "ranks"} <= set(hits[0])
    assert {hit["connector_instance_id"] for hit in hits} == {"bbc"}
    assert set(response["meta"]["semantic_plans"]) == {f"bbc/{s}" for s in ("business", "entertainment", "politics", "sport", "tech")}

    bad = subprocess.run([*SEMINDEX, "search", "x", "--k", "500"], env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "k=500 must be between 1 and 100" in bad.stderr


def test_semindex_dev_serves_the_ui_on_the_same_database(semindex_home):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dev = subprocess.Popen([*SEMINDEX, "dev", "--port", str(port)], env=_env(semindex_home),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        announced = ""
        for line in dev.stdout:
            if line.startswith("Dagster UI:"):
                announced = line
                break
        assert re.match(rf"Dagster UI: http://127\.0\.0\.1:{port}\b", announced), announced
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2) as response:
                    assert response.status == 200
                    break
            except OSError:
                time.sleep(0.5)
        else:
            raise AssertionError("the Dagster UI never answered")
    finally:
        os.killpg(dev.pid, 15)
        dev.wait(timeout=30)


def test_ci_runs_the_readme_test_command():
    readme_commands = re.findall(r"```bash\n(.+?)\n```", (PROJECT / "README.md").read_text())
    ci_script = (PROJECT / ".ci" / "run").read_text().strip().splitlines()
    assert ci_script[-1] == readme_commands[1]
