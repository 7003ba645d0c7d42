-- Chunks: the pending-record queue, staging and the per-batch reconciliation.

-- name: pending_count
SELECT count(*) FROM semindex.raw_records WHERE chunked_sha256 IS DISTINCT FROM content_sha256;

-- name: pending_batch
SELECT record_id, content_sha256, connector_id, connector_instance_id, stream, record_key, fields, deleted
FROM semindex.raw_records
WHERE chunked_sha256 IS DISTINCT FROM content_sha256 AND record_id > %s
ORDER BY record_id
LIMIT %s;

-- name: writer_lock
-- One chunk writer at a time: chunk ids then commit in the order they were handed out, which the
-- embedding backfill's watermark relies on.
SELECT pg_advisory_xact_lock(hashtext('semindex.chunk_writer'));

-- name: lock_unchanged
-- The batch's records whose content is still what was read (and chunked); others stay pending.
SELECT r.record_id
FROM semindex.raw_records AS r
JOIN unnest(%s::bigint[], %s::bytea[]) AS read(record_id, content_sha256) USING (record_id)
WHERE r.content_sha256 = read.content_sha256
ORDER BY r.record_id
FOR NO KEY UPDATE OF r;

-- name: create_staging
CREATE TEMP TABLE staged_chunks (
    record_id             bigint NOT NULL,
    connector_id          text NOT NULL,
    connector_instance_id text NOT NULL,
    stream                text NOT NULL,
    record_key            text NOT NULL,
    field                 text NOT NULL,
    chunk_no              integer NOT NULL,
    content               text NOT NULL,
    content_sha256        bytea NOT NULL,
    semantic_key          bytea NOT NULL
) ON COMMIT DROP;

-- name: copy_staging
COPY staged_chunks (record_id, connector_id, connector_instance_id, stream, record_key, field,
                    chunk_no, content, content_sha256, semantic_key) FROM STDIN;

-- name: delete_stale
-- Old chunks of the batch's records that the new cut no longer produces; vectors cascade.
DELETE FROM semindex.chunks AS c
WHERE c.record_id = ANY(%s)
  AND NOT EXISTS (SELECT 1 FROM staged_chunks AS s WHERE s.semantic_key = c.semantic_key);

-- name: insert_new
INSERT INTO semindex.chunks
    (record_id, connector_id, connector_instance_id, stream, record_key, field, chunk_no, content,
     content_sha256, semantic_key)
SELECT record_id, connector_id, connector_instance_id, stream, record_key, field, chunk_no, content,
       content_sha256, semantic_key
FROM staged_chunks
ORDER BY record_id, field, chunk_no
ON CONFLICT (semantic_key) DO NOTHING;

-- name: staged_count
SELECT count(*) FROM staged_chunks;

-- name: mark_records_chunked
WITH marked AS (
    UPDATE semindex.raw_records SET chunked_sha256 = content_sha256
    WHERE record_id = ANY(%s)
    RETURNING connector_instance_id, stream
)
INSERT INTO semindex.retained_size_projection AS p (connector_instance_id, stream, dirty)
SELECT DISTINCT connector_instance_id, stream, true FROM marked
ORDER BY connector_instance_id, stream
ON CONFLICT (connector_instance_id, stream) DO UPDATE SET dirty = true;

-- name: count
SELECT count(*) FROM semindex.chunks;
