"""Bulk-loads synthetic clustered vectors (with their records and chunks) straight into the tables,
for planner tests at a scale the encoder would take minutes to produce."""

from __future__ import annotations

import numpy as np

from semindex import retained_size
from semindex.search.engines import change_capture_for
from semindex.vectors.storage import PGVECTOR
from semindex.vectors.version import EmbeddingVersion

INSERT_RECORDS = """
INSERT INTO semindex.raw_records (connector_id, connector_instance_id, stream, record_key, fields,
                                  updated_at, content_sha256, chunked_sha256)
SELECT 'synthetic', %(instance)s, %(stream)s, 'r' || lpad(n::text, 7, '0'), '{}'::jsonb, now(),
       sha256(convert_to(%(instance)s || %(stream)s || n, 'UTF8')), sha256(convert_to(%(instance)s || %(stream)s || n, 'UTF8'))
FROM generate_series(1, %(rows)s) AS n
"""

INSERT_CHUNKS = """
INSERT INTO semindex.chunks (record_id, connector_id, connector_instance_id, stream, record_key, field,
                             chunk_no, content, content_sha256, semantic_key)
SELECT record_id, connector_id, connector_instance_id, stream, record_key, 'text', 0,
       'synthetic ' || record_key, content_sha256, sha256(content_sha256 || '\\x00'::bytea)
FROM semindex.raw_records WHERE connector_instance_id = %(instance)s AND stream = %(stream)s
ORDER BY record_id
RETURNING chunk_id, record_key, content_sha256
"""


def clustered_vectors(rng: np.random.Generator, rows: int, dims: int, centers: np.ndarray) -> np.ndarray:
    picks = rng.integers(0, len(centers), size=rows)
    vectors = centers[picks] + 0.35 * rng.normal(size=(rows, dims))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def load_sources(db, version: EmbeddingVersion, sizes: dict[tuple[str, str], int], seed: int = 7) -> dict:
    """{(instance, stream): (record_keys, vectors)} after loading every source."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(64, version.dimensions))
    PGVECTOR.create_table(db, version, change_capture_for(version))
    loaded = {}
    with db.connection() as conn:
        for (instance, stream), rows in sizes.items():
            params = {"instance": instance, "stream": stream, "rows": rows}
            conn.execute(INSERT_RECORDS, params)
            chunk_rows = conn.execute(INSERT_CHUNKS, params).fetchall()
            vectors = clustered_vectors(rng, rows, version.dimensions, centers)
            PGVECTOR.copy_version_rows(conn, version, (
                (chunk_id, instance, stream, record_key, "text", sha, vector)
                for (chunk_id, record_key, sha), vector in zip(chunk_rows, vectors, strict=True)
            ))
            conn.execute(
                "INSERT INTO semindex.retained_size_projection (connector_instance_id, stream) VALUES (%s, %s) "
                "ON CONFLICT DO NOTHING",
                (instance, stream),
            )
            loaded[(instance, stream)] = ([row[1] for row in chunk_rows], vectors)
        conn.execute("UPDATE semindex.embedding_backfill SET watermark = (SELECT max(chunk_id) FROM semindex.chunks) WHERE version_id = %s", (version.version_id,))
    retained_size.refresh_projection(db)
    return loaded, centers
