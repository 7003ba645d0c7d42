"""Per-run pipeline costs as tables grow: a second run on unchanged data, and a run after 1,000
changed records, at 100k and 1M rows, with the statements the pipeline used before (kept below as
the baseline, run in the same process on the same database) and the current library.

    SEMINDEX_HOME=/tmp/flat-home python bench/pipeline_rerun.py [--rows 100000 1000000] [--repeat 3] [--rebuild]

Data: `rows` records over 4 sources (70/20/7/3 %), one short text field each, one chunk per record,
a random unit vector per chunk (32 dimensions, a hashing-32 version: the content does not matter for
these costs), lexical documents, the version's HNSW and the hot sources' partial indexes, all loaded
once by COPY and kept (database semindex_bench_rerun_<rows>).

A run is the index pipeline's stages and checks, called the way the Dagster assets call them:
raw_records (an already ingested file, or 1,000 changed records), chunks, embeddings, vector_column,
hnsw_index, lexical_index, retained_size_projection, partial_index_set, and the checks chunk_schema,
embedding_schema, embedding_parity, lexical_index_valid, vector_indexes_valid, hnsw_recall. The
baseline differs from the library exactly where the per-run costs were: count(*) for every stage's
row count, the full anti-join parity, the projection recomputed from every row of a dirty source,
BERNOULLI samples (which read every page). Each figure is the median over --repeat runs; ratios are
baseline / current, measured in the same process, alternating.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_database import bench_database, log  # noqa: E402
from semindex import chunks, embeddings, indexes, lifecycle, quality, raw_records, retained_size, row_counts  # noqa: E402
from semindex.chunking import ChunkingParameters, chunk_record_fields  # noqa: E402
from semindex.database import Database  # noqa: E402
from semindex.partial_indexes import HotSourceBand, partial_index_stage  # noqa: E402
from semindex.vectors.storage import storage_for  # noqa: E402
from semindex.vectors.version import get_version  # noqa: E402

VERSION_KEY = "rerun-hashing-32"
DIMENSIONS = 32
SOURCES = {"s0": 0.70, "s1": 0.20, "s2": 0.07, "s3": 0.03}
STREAM = "documents"
SEED = 14
WORDS = [f"w{i:04d}" for i in range(3000)]
PARAMETERS = ChunkingParameters()
HNSW = indexes.HnswParameters(m=8, ef_construction=32, maintenance_work_mem="1GB")
CHANGED = 1000


def database_name(rows: int) -> str:
    return f"semindex_bench_rerun_{rows}"


def text_of(rng: np.random.Generator) -> str:
    return " ".join(rng.choice(WORDS, 12))


def record_line(i: int, source: str, text: str, updated_at: str = "2024-01-01T00:00:00Z") -> dict:
    return {"connector_id": "bench", "connector_instance_id": source, "stream": STREAM, "record_key": f"k{i:08d}",
            "fields": {"text": text}, "updated_at": updated_at}


def source_of(rows: int) -> np.ndarray:
    bounds = np.cumsum([int(rows * share) for share in SOURCES.values()])
    bounds[-1] = rows
    return np.searchsorted(bounds, np.arange(rows), side="right")


def build(db: Database, rows: int) -> None:
    version = lifecycle.register_version(db, VERSION_KEY, f"hashing-{DIMENSIONS}", DIMENSIONS)
    storage = storage_for(db)
    storage.create_table(db, version)
    rng = np.random.default_rng(SEED)
    names = list(SOURCES)
    of = source_of(rows)
    log(f"loading {rows:,} records, chunks and vectors over {len(names)} sources")
    started = time.perf_counter()
    with db.connection() as conn:
        for number, source in enumerate(names):
            mine = np.flatnonzero(of == number)
            for start in range(0, len(mine), 100_000):
                part = mine[start:start + 100_000]
                texts = {int(i): text_of(rng) for i in part}
                with conn.cursor().copy(
                    "COPY semindex.raw_records (connector_id, connector_instance_id, stream, record_key, fields, "
                    "updated_at, content_sha256, chunked_sha256) FROM STDIN"
                ) as copy:
                    for i, text in texts.items():
                        line = record_line(i, source, text)
                        sha = raw_records.parse_record(json.dumps(line), max_field_bytes=1 << 20).content_sha256
                        copy.write_row(("bench", source, STREAM, line["record_key"], json.dumps(line["fields"]),
                                        line["updated_at"], sha, sha))
                ids = conn.execute(
                    "SELECT record_id, record_key FROM semindex.raw_records WHERE connector_instance_id = %s "
                    "AND record_key = ANY(%s) ORDER BY record_id",
                    (source, [f"k{i:08d}" for i in part])).fetchall()
                chunk_rows = []
                with conn.cursor().copy(
                    "COPY semindex.chunks (record_id, connector_id, connector_instance_id, stream, record_key, field, "
                    "chunk_no, content, content_sha256, semantic_key) FROM STDIN"
                ) as copy:
                    for record_id, key in ids:
                        for chunk in chunk_record_fields(source, STREAM, key, {"text": texts[int(key[1:])]}, PARAMETERS):
                            copy.write_row((record_id, "bench", source, STREAM, key, chunk.field, chunk.chunk_no,
                                            chunk.content, chunk.content_sha256, chunk.semantic_key))
                chunk_rows = conn.execute(
                    "SELECT chunk_id, record_key, field, content_sha256 FROM semindex.chunks "
                    "WHERE record_id = ANY(%s) ORDER BY chunk_id", ([r[0] for r in ids],)).fetchall()
                vectors = rng.standard_normal((len(chunk_rows), DIMENSIONS)).astype(np.float32)
                vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
                storage.copy_version_rows(conn, version, (
                    (chunk_id, source, STREAM, key, field, sha, vector)
                    for (chunk_id, key, field, sha), vector in zip(chunk_rows, vectors, strict=True)))
                for first in range(0, len(ids), 20_000):
                    chunks.rewrite_lexical_documents(conn, [r[0] for r in ids[first:first + 20_000]])
                conn.commit()
                log(f"  {source}: {start + len(part):,} of {len(mine):,} rows ({time.perf_counter() - started:.0f}s)")
            conn.execute("INSERT INTO semindex.retained_size_projection (connector_instance_id, stream) "
                         "VALUES (%s, %s) ON CONFLICT DO NOTHING", (source, STREAM))
            conn.commit()
        conn.execute("UPDATE semindex.embedding_backfill SET watermark = (SELECT max(chunk_id) FROM semindex.chunks) "
                     "WHERE version_id = %s", (version.version_id,))
        conn.execute("UPDATE semindex.embedding_versions SET active = true, state = 'ready' WHERE version_id = %s",
                     (version.version_id,))
    retained_size.refresh_projection(db)
    log("lexical GIN")
    indexes.build_lexical_index(db, "1GB")
    log("HNSW")
    started = time.perf_counter()
    indexes.build_hnsw(db, version, HNSW)
    log(f"  HNSW built in {time.perf_counter() - started:.0f}s")
    partial_index_stage(db, VERSION_KEY, HotSourceBand(), HNSW)
    with db.autocommit_connection() as conn:
        conn.execute("VACUUM ANALYZE")
    with db.connection() as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS public.bench_rerun_complete (rows bigint)")
        conn.execute("INSERT INTO public.bench_rerun_complete VALUES (%s)", (rows,))


def built(db: Database) -> bool:
    with db.connection() as conn:
        return conn.execute("SELECT to_regclass('public.bench_rerun_complete') IS NOT NULL").fetchone()[0]


# The baseline: the statements the stages and checks ran before row counts were kept, the parity
# check was bounded and the projection read kept counts, verbatim.
OLD = {
    "live_records": "SELECT count(*) FROM semindex.raw_records WHERE NOT deleted",
    "chunks": "SELECT count(*) FROM semindex.chunks",
    "vectors": "SELECT count(*) FROM {vectors}",
    "lexical_documents": "SELECT count(*) FROM semindex.lexical_documents",
    "row_estimate": "SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = to_regclass(%s)",
    "chunk_sample": "SELECT chunk_id, connector_instance_id, stream, record_key, field, chunk_no, content, content_sha256, "
                    "semantic_key FROM semindex.chunks TABLESAMPLE BERNOULLI (%s) LIMIT %s",
    "vector_sample": "SELECT chunk_id, embedding FROM {vectors} TABLESAMPLE BERNOULLI (%s) LIMIT %s",
    "parity": """SELECT
    (SELECT count(*) FROM semindex.chunks AS c
     WHERE NOT EXISTS (SELECT 1 FROM {vectors} AS v WHERE v.chunk_id = c.chunk_id)) AS missing,
    (SELECT count(*) FROM {vectors} AS v
     WHERE NOT EXISTS (SELECT 1 FROM semindex.chunks AS c WHERE c.chunk_id = v.chunk_id)) AS orphaned,
    (SELECT count(*) FROM semindex.chunks) AS chunks,
    (SELECT count(*) FROM {vectors}) AS vectors""",
    "lock_dirty": "SELECT connector_instance_id, stream FROM semindex.retained_size_projection "
                  "WHERE dirty ORDER BY connector_instance_id, stream FOR UPDATE SKIP LOCKED",
    "recompute_counts": """WITH sources AS (
    SELECT * FROM unnest(%(instances)s::text[], %(streams)s::text[]) AS s(connector_instance_id, stream)
), records AS (
    SELECT r.connector_instance_id, r.stream,
           count(*) FILTER (WHERE NOT r.deleted) AS record_count,
           coalesce(sum(pg_column_size(r.fields)) FILTER (WHERE NOT r.deleted), 0) AS record_bytes
    FROM semindex.raw_records AS r JOIN sources USING (connector_instance_id, stream)
    GROUP BY 1, 2
), chunk_counts AS (
    SELECT c.connector_instance_id, c.stream, count(*) AS chunk_count,
           coalesce(sum(octet_length(c.content)), 0) AS chunk_bytes
    FROM semindex.chunks AS c JOIN sources USING (connector_instance_id, stream)
    GROUP BY 1, 2
)
UPDATE semindex.retained_size_projection AS p
SET record_count = coalesce(records.record_count, 0),
    chunk_count = coalesce(chunk_counts.chunk_count, 0),
    bytes = coalesce(records.record_bytes, 0) + coalesce(chunk_counts.chunk_bytes, 0),
    embedded_counts = '{{}}'::jsonb
FROM sources
LEFT JOIN records USING (connector_instance_id, stream)
LEFT JOIN chunk_counts USING (connector_instance_id, stream)
WHERE p.connector_instance_id = sources.connector_instance_id AND p.stream = sources.stream""",
    "add_version_counts": """WITH sources AS (
    SELECT * FROM unnest(%(instances)s::text[], %(streams)s::text[]) AS s(connector_instance_id, stream)
), counts AS (
    SELECT v.connector_instance_id, v.stream, count(*) AS embedded
    FROM {vectors} AS v JOIN sources USING (connector_instance_id, stream)
    GROUP BY 1, 2
)
UPDATE semindex.retained_size_projection AS p
SET embedded_counts = p.embedded_counts || jsonb_build_object(%(version_key)s::text, counts.embedded),
    bytes = p.bytes + counts.embedded * (4 * %(dimensions)s + 8)
FROM counts
WHERE p.connector_instance_id = counts.connector_instance_id AND p.stream = counts.stream""",
    "mark_clean": """UPDATE semindex.retained_size_projection AS p
SET dirty = false, computed_at = now()
FROM unnest(%(instances)s::text[], %(streams)s::text[]) AS s(connector_instance_id, stream)
WHERE p.connector_instance_id = s.connector_instance_id AND p.stream = s.stream""",
}


def old(name: str, **tables: str):
    from psycopg import sql

    return sql.SQL(OLD[name]).format(**{k: sql.Identifier(*v.split(".")) for k, v in tables.items()})


def scalar(db: Database, query, params=None):
    with db.connection() as conn:
        return conn.execute(query, params).fetchone()[0]


def old_sample_percent(db: Database, table: str, wanted: int) -> float:
    rows = scalar(db, old("row_estimate"), (table,)) or 0
    return 100.0 if rows <= wanted else min(100.0, 300.0 * wanted / rows)


def old_projection_refresh(db: Database) -> None:
    version = get_version(db, VERSION_KEY)
    with db.connection() as conn:
        dirty = conn.execute(old("lock_dirty")).fetchall()
        if not dirty:
            return
        params = {"instances": [row[0] for row in dirty], "streams": [row[1] for row in dirty]}
        conn.execute(old("recompute_counts"), params)
        conn.execute(old("add_version_counts", vectors=version.vectors_table),
                     {**params, "version_key": version.version_key, "dimensions": version.dimensions})
        conn.execute(old("mark_clean"), params)


def old_parity(db: Database) -> None:
    from semindex.sql_files import statement

    version = get_version(db, VERSION_KEY)
    with db.connection() as conn:
        watermark = conn.execute(statement("vectors", "watermark"), (version.version_id,)).fetchone()
        conn.execute(statement("vectors", "pending_count"), (watermark[0] if watermark else 0,)).fetchone()
        conn.execute(old("parity", vectors=version.vectors_table)).fetchone()


def steps(path: Path | None, baseline: bool) -> list[tuple[str, Callable[[Database], object]]]:
    """The run's stages and checks in the index pipeline's order, as (name, call)."""
    from semindex import evaluation, vector_column
    from semindex.indexes import LEXICAL_INDEX_NAME
    from semindex.partial_indexes import managed_partial_indexes

    def version(db):
        return get_version(db, VERSION_KEY)

    def count_vectors(db):
        if baseline:
            return scalar(db, old("vectors", vectors=version(db).vectors_table))
        return row_counts.vector_rows(db, version(db))

    def raw(db):
        if path is not None:
            raw_records.ingest_files(db, [path])
        return scalar(db, old("live_records")) if baseline else raw_records.live_record_count(db)

    def chunk(db):
        chunks.sync_chunks(db, PARAMETERS)
        return scalar(db, old("chunks")) if baseline else chunks.live_chunk_count(db)

    def embed(db):
        # The library's embeddings_stage still counts with count(*) (semindex.embeddings.vector_count,
        # another change): both sides here run its backfill, then their own count.
        embeddings.backfill(db, version(db), batch_size=1024)
        return count_vectors(db)

    def column(db):
        if not baseline:
            return vector_column.vector_column_stage(db, VERSION_KEY)
        storage = storage_for(db)
        v = version(db)
        storage.create_table(db, v)
        storage.check_column(db, v)
        with db.autocommit_connection() as conn:
            conn.execute(f"ANALYZE {v.vectors_table}")
        return count_vectors(db)

    def hnsw(db):
        if not baseline:
            return indexes.hnsw_stage(db, VERSION_KEY, HNSW, log_line=lambda line: None)
        indexes.build_hnsw(db, version(db), HNSW)
        return count_vectors(db)

    def lexical(db):
        if not baseline:
            return indexes.lexical_stage(db, log_line=lambda line: None)
        chunks.backfill_lexical_documents(db)
        indexes.index_validity(db, [indexes.RETIRED_LEXICAL_INDEX_NAME])
        indexes.build_lexical_index(db)
        return scalar(db, old("lexical_documents"))

    def projection(db):
        if not baseline:
            return retained_size.projection_stage(db)
        old_projection_refresh(db)
        return retained_size.projection(db)

    def chunk_schema(db):
        if not baseline:
            return quality.check_chunk_frame(db)
        percent = old_sample_percent(db, "semindex.chunks", 2000)
        with db.connection() as conn:
            rows = conn.execute(old("chunk_sample"), (percent, 2000)).fetchall()
        return quality.chunk_rows_verdict(rows)

    def embedding_schema(db):
        v = version(db)
        if not baseline:
            return quality.check_embedding_frame(db, v)
        percent = old_sample_percent(db, v.vectors_table, 2000)
        with db.connection() as conn:
            rows = conn.execute(old("vector_sample", vectors=v.vectors_table), (percent, 2000)).fetchall()
        return quality.vector_rows_verdict(v, rows)

    def parity(db):
        return old_parity(db) if baseline else quality.check_parity(db, version(db))

    def recall(db):
        v = version(db)
        if baseline:
            return evaluation.hnsw_recall(db, v, threshold=0.0)
        return quality.hnsw_recall_check(db, v, threshold=0.0)

    return [
        ("raw_records", raw), ("chunks", chunk), ("embeddings", embed), ("vector_column", column),
        ("hnsw_index", hnsw), ("lexical_index", lexical), ("retained_size_projection", projection),
        ("partial_index_set", lambda db: partial_index_stage(db, VERSION_KEY, HotSourceBand(), HNSW)),
        ("check chunk_schema", chunk_schema), ("check embedding_schema", embedding_schema),
        ("check embedding_parity", parity),
        ("check lexical_index_valid", lambda db: quality.check_index_validity(db, [LEXICAL_INDEX_NAME])),
        ("check vector_indexes_valid", lambda db: quality.check_index_validity(
            db, [version(db).hnsw_index_name, *managed_partial_indexes(db, version(db))])),
        ("check hnsw_recall", recall),
    ]


def run(db: Database, path: Path | None, baseline: bool) -> dict[str, float]:
    seconds = {}
    for name, call in steps(path, baseline):
        started = time.perf_counter()
        call(db)
        seconds[name] = time.perf_counter() - started
    seconds["total"] = sum(seconds.values())
    return seconds


def changed_records(rows: int, round_no: int, folder: Path) -> Path:
    """CHANGED records picked at random, with new text (new each round)."""
    rng = np.random.default_rng(SEED + 1000 + round_no)
    of = source_of(rows)
    names = list(SOURCES)
    picked = rng.choice(rows, CHANGED, replace=False)
    path = folder / f"changed_{rows}_{round_no}.jsonl"
    with path.open("w") as handle:
        for i in picked:
            line = record_line(int(i), names[of[i]], f"round {round_no} " + text_of(rng), f"2025-01-{1 + round_no % 28:02d}T00:00:00Z")
            handle.write(json.dumps(line) + "\n")
    return path


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    return {name: statistics.median(run[name] for run in runs) for name in runs[0]}


def table(title: str, before: dict[str, float], after: dict[str, float]) -> str:
    lines = [title, f"  {'step':<30} {'before s':>10} {'after s':>10} {'ratio':>8}"]
    for name in before:
        ratio = before[name] / after[name] if after[name] > 0 else float("inf")
        lines.append(f"  {name:<30} {before[name]:>10.3f} {after[name]:>10.3f} {ratio:>7.1f}x")
    return "\n".join(lines)


def measure(db: Database, rows: int, repeat: int, folder: Path) -> dict:
    results = {}
    # Once, untimed in the tables: the first run on the new code counts the vector table and checks
    # parity in full (there is no verified state yet); printed as the one-time cost.
    started = time.perf_counter()
    run(db, None, baseline=False)
    results["first_run_after_upgrade_s"] = time.perf_counter() - started
    log(f"  first run on the new code (one-time counts, full parity): {results['first_run_after_upgrade_s']:.1f}s")
    unchanged = {"before": [], "after": []}
    for i in range(repeat):
        for side in ("before", "after"):
            unchanged[side].append(run(db, None, baseline=side == "before"))
            log(f"  unchanged, {side}: {unchanged[side][-1]['total']:.2f}s")
    changed = {"before": [], "after": []}
    round_no = 0
    for i in range(repeat):
        for side in ("before", "after"):
            round_no += 1
            path = changed_records(rows, round_no, folder)
            changed[side].append(run(db, path, baseline=side == "before"))
            log(f"  {CHANGED:,} changed records, {side}: {changed[side][-1]['total']:.2f}s")
    for name, runs in (("unchanged", unchanged), ("changed", changed)):
        results[name] = {side: median_of(runs[side]) for side in runs}
    return results


def write_overhead(db: Database, n: int = 20_000) -> dict[str, float]:
    """What the counting triggers add to a write: the same INSERT of n chunks (then DELETE) with the
    triggers on and off, in one transaction each, rolled back."""
    timings = {}
    for label, enable in (("triggers off", False), ("triggers on", True), ("triggers off ", False), ("triggers on ", True)):
        with db.connection() as conn:
            if not enable:
                conn.execute("ALTER TABLE semindex.chunks DISABLE TRIGGER USER")
            started = time.perf_counter()
            conn.execute(
                "INSERT INTO semindex.chunks (record_id, connector_id, connector_instance_id, stream, record_key, field, "
                "chunk_no, content, content_sha256, semantic_key) SELECT record_id, connector_id, connector_instance_id, "
                "stream, record_key, field, chunk_no + 1000, content, content_sha256, sha256(semantic_key) "
                "FROM semindex.chunks ORDER BY chunk_id LIMIT %s", (n,))
            conn.execute("DELETE FROM semindex.chunks WHERE chunk_no >= 1000")
            timings[label.strip()] = timings.get(label.strip(), []) + [time.perf_counter() - started]
            conn.rollback()
    return {label: min(values) for label, values in timings.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--build-only", action="store_true")
    arguments = parser.parse_args()
    report = []
    with tempfile.TemporaryDirectory() as folder:
        for rows in arguments.rows:
            started = time.perf_counter()
            db, existed = bench_database(database_name(rows), rebuild=arguments.rebuild)
            opened = time.perf_counter() - started
            if not built(db):
                if existed:  # a build that did not finish: start over
                    db.close()
                    db, _ = bench_database(database_name(rows), rebuild=True)
                build(db, rows)
            if arguments.build_only:
                continue
            log(f"{rows:,} rows: opening (bootstrap; counts the fixed tables once on a database built before) {opened:.1f}s")
            results = measure(db, rows, arguments.repeat, Path(folder))
            overhead = write_overhead(db)
            report.append(table(f"\n{rows:,} rows, second run on unchanged data (median of {arguments.repeat})",
                                results["unchanged"]["before"], results["unchanged"]["after"]))
            report.append(table(f"\n{rows:,} rows, run after {CHANGED:,} changed records (median of {arguments.repeat})",
                                results["changed"]["before"], results["changed"]["after"]))
            report.append(f"  one-time: open/bootstrap {opened:.1f}s, first run on the new code "
                          f"{results['first_run_after_upgrade_s']:.1f}s; write overhead, INSERT+DELETE of 20,000 chunks: "
                          + ", ".join(f"{k} {v:.3f}s" for k, v in overhead.items()))
            print("\n".join(report[-3:]), flush=True)
            db.close()
    if len(arguments.rows) > 1:
        print("\n".join(report))


if __name__ == "__main__":
    main()
