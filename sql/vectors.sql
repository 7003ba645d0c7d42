-- One vector table per embedding version, so each version has its own HNSW graph and a query
-- touches only its own rows. {vectors} is semindex.chunk_vectors_v<version_id>.
-- Without pgvector (JSONB mode) the same table holds each vector as a JSON array of numbers, checked
-- on write as vector(d) would be: an array of exactly d numbers.

-- name: create_table
CREATE TABLE IF NOT EXISTS {vectors} (
    chunk_id              bigint PRIMARY KEY REFERENCES semindex.chunks (chunk_id) ON DELETE CASCADE,
    connector_instance_id text NOT NULL,
    stream                text NOT NULL,
    record_key            text NOT NULL,
    field                 text NOT NULL,
    content_sha256        bytea NOT NULL,
    embedding             vector({dimensions}) NOT NULL
);
CREATE INDEX IF NOT EXISTS {scope_index} ON {vectors} (connector_instance_id, stream, record_key);
CREATE INDEX IF NOT EXISTS {content_index} ON {vectors} (content_sha256);
INSERT INTO semindex.embedding_backfill (version_id) VALUES ({version_id}) ON CONFLICT DO NOTHING;

-- name: create_table_jsonb
CREATE TABLE IF NOT EXISTS {vectors} (
    chunk_id              bigint PRIMARY KEY REFERENCES semindex.chunks (chunk_id) ON DELETE CASCADE,
    connector_instance_id text NOT NULL,
    stream                text NOT NULL,
    record_key            text NOT NULL,
    field                 text NOT NULL,
    content_sha256        bytea NOT NULL,
    -- CASE, not AND: jsonb_array_length raises on a scalar, and AND does not fix evaluation order.
    embedding             jsonb NOT NULL CONSTRAINT {embedding_check} CHECK (CASE
        WHEN jsonb_typeof(embedding) = 'array'
        THEN jsonb_array_length(embedding) = {dimensions}
             AND NOT jsonb_path_exists(embedding, '$[*] ? (@.type() != "number")')
        ELSE false END)
);
CREATE INDEX IF NOT EXISTS {scope_index} ON {vectors} (connector_instance_id, stream, record_key);
CREATE INDEX IF NOT EXISTS {content_index} ON {vectors} (content_sha256);
INSERT INTO semindex.embedding_backfill (version_id) VALUES ({version_id}) ON CONFLICT DO NOTHING;

-- name: column_type
SELECT format_type(a.atttypid, a.atttypmod)
FROM pg_attribute a
WHERE a.attrelid = to_regclass(%s) AND a.attname = 'embedding' AND NOT a.attisdropped;

-- name: watermark
SELECT watermark, encoded_texts, reused_vectors FROM semindex.embedding_backfill WHERE version_id = %s;

-- name: pending_count
SELECT count(*) FROM semindex.chunks WHERE chunk_id > %s;

-- name: pending_batch
SELECT chunk_id, content_sha256, content FROM semindex.chunks
WHERE chunk_id > %s ORDER BY chunk_id LIMIT %s;

-- name: texts_with_vectors
SELECT DISTINCT content_sha256 FROM {vectors} WHERE content_sha256 = ANY(%s);

-- name: create_staging
CREATE TEMP TABLE staged_vectors (
    content_sha256 bytea NOT NULL,
    embedding      vector NOT NULL
) ON COMMIT DROP;

-- name: copy_staging
-- Binary COPY either way: pgvector's binary vector, or (JSONB mode) jsonb's binary text form.
COPY staged_vectors (content_sha256, embedding) FROM STDIN WITH (FORMAT BINARY);

-- name: create_staging_jsonb
-- JSONB mode: the same staging, with each vector as a JSON array (insert_batch serves both).
CREATE TEMP TABLE staged_vectors (
    content_sha256 bytea NOT NULL,
    embedding      jsonb NOT NULL
) ON COMMIT DROP;

-- name: insert_batch
-- Every chunk of the batch that still exists gets the vector of its text: freshly encoded (staged)
-- or shared from a chunk with the same content hash that already has one.
INSERT INTO {vectors} (chunk_id, connector_instance_id, stream, record_key, field, content_sha256, embedding)
SELECT c.chunk_id, c.connector_instance_id, c.stream, c.record_key, c.field, c.content_sha256,
       coalesce(s.embedding, shared.embedding)
FROM semindex.chunks AS c
LEFT JOIN staged_vectors AS s ON s.content_sha256 = c.content_sha256
LEFT JOIN LATERAL (
    SELECT v.embedding FROM {vectors} AS v
    WHERE s.content_sha256 IS NULL AND v.content_sha256 = c.content_sha256
    LIMIT 1
) AS shared ON true
WHERE c.chunk_id = ANY(%(chunk_ids)s)
  AND coalesce(s.embedding, shared.embedding) IS NOT NULL
ON CONFLICT (chunk_id) DO NOTHING;

-- name: still_without_vector
-- Chunks of the batch that are alive but got no vector: their text's only other copy was deleted
-- between the read and this write, so there was nothing to share.
SELECT c.content_sha256, c.content FROM semindex.chunks AS c
WHERE c.chunk_id = ANY(%s)
  AND NOT EXISTS (SELECT 1 FROM {vectors} AS v WHERE v.chunk_id = c.chunk_id);

-- name: advance_watermark
UPDATE semindex.embedding_backfill
SET watermark = %(through)s,
    encoded_texts = encoded_texts + %(encoded)s,
    reused_vectors = reused_vectors + %(reused)s,
    updated_at = now()
WHERE version_id = %(version_id)s AND watermark = %(after)s;

-- name: mark_sources_dirty
INSERT INTO semindex.retained_size_projection AS p (connector_instance_id, stream, dirty)
SELECT DISTINCT connector_instance_id, stream, true FROM semindex.chunks
WHERE chunk_id > %(after)s AND chunk_id <= %(through)s
ORDER BY connector_instance_id, stream
ON CONFLICT (connector_instance_id, stream) DO UPDATE SET dirty = true;

-- name: copy_version_rows
-- Straight into a version's table: bulk loads of known vectors (benchmarks, tests).
COPY {vectors} (chunk_id, connector_instance_id, stream, record_key, field, content_sha256, embedding)
FROM STDIN WITH (FORMAT BINARY);

-- name: count
SELECT count(*) FROM {vectors};

-- name: table_exists
SELECT to_regclass(%s) IS NOT NULL;

-- name: table_bytes
SELECT pg_total_relation_size(%s::regclass);

