"""A version's stored rows and vectors keyed by chunk identity (semantic key): what the kill tests
compare between an interrupted backfill and an uninterrupted one."""

from __future__ import annotations

import numpy as np

from semindex.vectors.version import EmbeddingVersion


def rows_and_vectors(conn, version: EmbeddingVersion) -> tuple[dict[bytes, tuple], dict[bytes, np.ndarray]]:
    """{semantic key: (instance, stream, record key, field, content sha)} and {semantic key: vector}."""
    table = version.vectors_table  # built from the integer version id only
    rows, vectors = {}, {}
    for semantic_key, instance, stream, record_key, field, sha, embedding in conn.execute(
        f"SELECT c.semantic_key, v.connector_instance_id, v.stream, v.record_key, v.field, v.content_sha256, "
        f"v.embedding FROM {table} v JOIN semindex.chunks c USING (chunk_id)"
    ):
        rows[bytes(semantic_key)] = (instance, stream, record_key, field, bytes(sha))
        vectors[bytes(semantic_key)] = np.asarray(embedding.to_numpy(), dtype=np.float64)
    return rows, vectors
