"""Index builds go parallel only when the server's /dev/shm has room for the build's memory."""

from __future__ import annotations

import os

import numpy as np
import pytest

from semindex import build_parallelism as probe
from semindex import indexes, lifecycle
from tests.conftest import scratch_database
from tests.synthetic_vectors import load_sources


@pytest.fixture(scope="module")
def database(server_url):
    with scratch_database(server_url, "probe") as (_, db):
        yield db


def test_a_local_server_with_room_in_dev_shm_builds_in_parallel(database):
    plan = probe.build_parallelism(database, "64MB")
    # The embedded server is on this host; the leader takes one core, workers the others.
    assert plan.workers == max(0, min(2, (os.cpu_count() or 1) - 1))
    assert "/dev/shm" in plan.reason or "one core" in plan.reason


def test_a_small_dev_shm_means_a_serial_build_and_says_why(database, monkeypatch):
    small = os.statvfs_result((4096, 4096, 16384, 16384, 16384, 0, 0, 0, 0, 255))  # 64 MB free
    monkeypatch.setattr(probe.os, "statvfs", lambda path: small)
    plan = probe.build_parallelism(database, "256MB")
    assert plan.workers == 0
    assert "has 64 MB free" in plan.reason and "needs about 320 MB" in plan.reason
    # What fits still goes parallel.
    assert probe.build_parallelism(database, "32MB").workers == max(0, min(2, (os.cpu_count() or 1) - 1))


def test_the_environment_overrides_the_probe(database, monkeypatch):
    monkeypatch.setenv("SEMINDEX_INDEX_BUILD_WORKERS", "0")
    assert probe.build_parallelism(database, "64MB") == probe.BuildParallelism(0, "SEMINDEX_INDEX_BUILD_WORKERS=0")


def test_an_hnsw_build_reports_its_workers_and_gives_a_valid_index(server_url):
    with scratch_database(server_url, "parallel") as (_, db):
        version = lifecycle.register_version(db, "parallel-32", "hashing-32", 32)
        load_sources(db, version, {("a", "s"): 3_000})
        build = indexes.build_hnsw(db, version, indexes.HnswParameters(maintenance_work_mem="64MB"))
        assert build.action == "built" and build.parallel_workers == probe.build_parallelism(db, "64MB").workers
        assert indexes.index_validity(db, [version.hnsw_index_name])[version.hnsw_index_name] is True
        with db.connection() as conn:
            # The session's settings were reset after the build.
            assert conn.execute("SHOW max_parallel_maintenance_workers").fetchone()[0] == "2"
        assert np.isfinite(build.seconds)
